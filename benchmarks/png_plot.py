"""A small line-plot writer for benchmark figures: RGB canvas, 5x7 bitmap font, PNG via zlib.

esfast depends on no plotting library, so the benchmarks draw their own figures.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

# 5x7 glyphs, one string of 7 rows per character, each row 5 bits (MSB left) in hex.
_FONT = {
    "0": "0E11131519110E",
    "1": "040C040404040E",
    "2": "0E11010204081F",
    "3": "1F02040201110E",
    "4": "02060A121F0202",
    "5": "1F101E0101110E",
    "6": "0608101E11110E",
    "7": "1F010204080808",
    "8": "0E11110E11110E",
    "9": "0E11110F01020C",
    "A": "0E11111F111111",
    "B": "1E11111E11111E",
    "C": "0E11101010110E",
    "D": "1C12111111121C",
    "E": "1F10101E10101F",
    "F": "1F10101E101010",
    "G": "0E11101711110F",
    "H": "1111111F111111",
    "I": "0E04040404040E",
    "J": "0702020202120C",
    "K": "11121418141211",
    "L": "1010101010101F",
    "M": "111B1515111111",
    "N": "11111915131111",
    "O": "0E11111111110E",
    "P": "1E11111E101010",
    "Q": "0E11111115120D",
    "R": "1E11111E141211",
    "S": "0F10100E01011E",
    "T": "1F040404040404",
    "U": "1111111111110E",
    "V": "11111111110A04",
    "W": "11111115151B11",
    "X": "11110A040A1111",
    "Y": "11110A04040404",
    "Z": "1F01020408101F",
    " ": "00000000000000",
    ".": "0000000000000C",
    ",": "00000000000C08",
    "-": "0000001F000000",
    ":": "000C0C000C0C00",
    "(": "02040808080402",
    ")": "08040202020408",
    "%": "18190204081303",
    "/": "00010204081000",
    "=": "00001F001F0000",
    "+": "0004041F040400",
    "_": "0000000000001F",
}


def _glyph(char: str) -> np.ndarray:
    rows = _FONT.get(char.upper(), _FONT[" "])
    bits = [int(rows[i : i + 2], 16) for i in range(0, 14, 2)]
    return np.array([[(row >> (4 - col)) & 1 for col in range(5)] for row in bits], dtype=bool)


class Canvas:
    """An RGB image with a white background and simple drawing operations."""

    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.full((height, width, 3), 255, dtype=np.uint8)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: tuple[int, int, int], width: int = 1) -> None:
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        xs = np.rint(np.linspace(x0, x1, steps)).astype(int)
        ys = np.rint(np.linspace(y0, y1, steps)).astype(int)
        height, wide = self.pixels.shape[:2]
        for dx in range(-(width // 2), width - width // 2):
            for dy in range(-(width // 2), width - width // 2):
                keep = (xs + dx >= 0) & (xs + dx < wide) & (ys + dy >= 0) & (ys + dy < height)
                self.pixels[ys[keep] + dy, xs[keep] + dx] = color

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = (0, 0, 0), scale: int = 2) -> None:
        for index, char in enumerate(text):
            glyph = np.kron(_glyph(char), np.ones((scale, scale), dtype=bool))
            left = x + index * 6 * scale
            region = self.pixels[y : y + glyph.shape[0], left : left + glyph.shape[1]]
            mask = glyph[: region.shape[0], : region.shape[1]]
            region[mask] = color

    def save_png(self, path: Path) -> None:
        height, width = self.pixels.shape[:2]
        raw = b"".join(b"\x00" + self.pixels[row].tobytes() for row in range(height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def line_plot(
    path: Path,
    series: list[tuple[np.ndarray, np.ndarray, tuple[int, int, int], str]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hlines: list[tuple[float, str]] = (),
    markers: list[tuple[float, float, str]] = (),
    size: tuple[int, int] = (900, 560),
) -> None:
    """Draws lines (x, y, color, label) with axes, ticks, dashed horizontal references and point markers."""
    width, height = size
    left, right, top, bottom = 90, 30, 50, 70
    canvas = Canvas(width, height)
    xs = np.concatenate([s[0] for s in series] + [np.array([m[0] for m in markers])])
    ys = np.concatenate([s[1] for s in series] + [np.array([h[0] for h in hlines])] + [np.array([m[1] for m in markers])])
    x_lo, x_hi = 0.0, float(xs.max()) * 1.02
    y_lo, y_hi = float(min(ys.min(), 0)), float(ys.max()) * 1.08
    if y_hi <= y_lo:  # a flat series at or below zero: give the axis some height
        y_hi = y_lo + 1.0

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom)

    grey, dark = (200, 200, 200), (60, 60, 60)
    for tick in np.linspace(y_lo, y_hi, 6):
        canvas.line(left, py(tick), width - right, py(tick), (235, 235, 235))
        canvas.text(8, int(py(tick)) - 7, f"{tick:7.0f}", dark)
    for tick in np.linspace(x_lo, x_hi, 7):
        canvas.text(int(px(tick)) - 20, height - bottom + 10, f"{tick / 1e6:.1f}M", dark)
    canvas.line(left, top, left, height - bottom, dark)
    canvas.line(left, height - bottom, width - right, height - bottom, dark)
    for value, label in hlines:
        for start in np.arange(left, width - right, 16):
            canvas.line(start, py(value), min(start + 8, width - right), py(value), grey)
        canvas.text(width - right - 6 * 2 * len(label) - 4, int(py(value)) - 18, label, (120, 120, 120))
    for x, y, _ in markers:
        canvas.line(px(x) - 6, py(y) - 6, px(x) + 6, py(y) + 6, (200, 40, 40), 2)
        canvas.line(px(x) - 6, py(y) + 6, px(x) + 6, py(y) - 6, (200, 40, 40), 2)
    for index, (x, y, color, label) in enumerate(series):
        for i in range(1, len(x)):
            canvas.line(px(x[i - 1]), py(y[i - 1]), px(x[i]), py(y[i]), color, 2)
        canvas.line(left + 20, top + 12 + 22 * index, left + 50, top + 12 + 22 * index, color, 3)
        canvas.text(left + 58, top + 5 + 22 * index, label, color)
    if markers:
        row = len(series)
        canvas.line(left + 29, top + 6 + 22 * row, left + 41, top + 18 + 22 * row, (200, 40, 40), 2)
        canvas.line(left + 29, top + 18 + 22 * row, left + 41, top + 6 + 22 * row, (200, 40, 40), 2)
        canvas.text(left + 58, top + 5 + 22 * row, markers[0][2], (200, 40, 40))
    canvas.text(left, 14, title, (0, 0, 0))
    canvas.text(width // 2 - 6 * len(xlabel), height - 30, xlabel, dark)
    canvas.text(8, top - 26, ylabel, dark)
    canvas.save_png(path)
