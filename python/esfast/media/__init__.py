"""What a person looks at: learning curves of runs and videos of policies, each on an optional dependency.

- :mod:`esfast.media.plotting`: learning curves of run directories with matplotlib
  (``esfast plot``; ``esfast[plot]``);
- :mod:`esfast.media.video`: videos of a policy's episodes, encoded with PyAV
  (``esfast play --video``; ``esfast[video]``);
- :mod:`esfast.media.offscreen`: the OpenGL backend of MuJoCo's offscreen rendering, found by
  probing in :mod:`esfast.media.gl_probe` processes.

Nothing here is imported by training: the trainer writes run directories (:mod:`esfast.run_directory`,
:mod:`esfast.tensorboard_log`), and these modules read them and their checkpoints. Each optional
package is imported when a figure is drawn or a video written, not at import.
"""
