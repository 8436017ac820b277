#include "esfast/noise_table.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

#include "esfast/gaussian.hpp"

namespace esfast {
namespace {

constexpr char kMagic[8] = {'E', 'S', 'F', 'N', 'O', 'I', 'S', 'E'};
constexpr std::uint32_t kStateGenerating = 0;
constexpr std::uint32_t kStateReady = 1;
constexpr std::size_t kGenerateChunk = std::size_t{1} << 20;  // samples per task (4 MiB)

/** The first bytes of a shared segment. */
struct SharedHeader {
    char magic[8];
    std::uint32_t layout_version;
    std::uint32_t state;  // accessed with __atomic builtins
    std::uint64_t size;
    std::uint64_t seed;
    std::int64_t creator_pid;
    std::uint64_t creator_start;  // the creator's start time (process_start_ticks), 0: unknown
};
static_assert(sizeof(SharedHeader) <= kSharedHeaderBytes, "header must fit its page");

[[noreturn]] void throw_errno(int err, const std::string& what) {
    throw std::system_error(err, std::generic_category(), what);
}

/** Closes a file descriptor when it goes out of scope. */
struct FdGuard {
    int fd;
    ~FdGuard() {
        if (fd >= 0) ::close(fd);
    }
};

std::size_t physical_memory_bytes() {
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page = ::sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page)
                                 : ~std::size_t{0};
}

void check_fits_in_memory(std::size_t bytes) {
    if (bytes > physical_memory_bytes()) {
        throw_errno(ENOMEM, "noise table of " + std::to_string(bytes) +
                                " bytes is larger than this machine's memory");
    }
}

/** When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat); 0 when
 *  it cannot be read (no such process, no /proc). */
std::uint64_t process_start_ticks(std::int64_t pid) {
    const std::string path = "/proc/" + std::to_string(pid) + "/stat";
    std::FILE* file = std::fopen(path.c_str(), "r");
    if (file == nullptr) return 0;
    char line[1024];
    const std::size_t length = std::fread(line, 1, sizeof line - 1, file);
    std::fclose(file);
    line[length] = '\0';
    // The command name (field 2) is in parentheses and may hold spaces or ')': count from the last ')'.
    const char* field = std::strrchr(line, ')');
    if (field == nullptr) return 0;
    for (int index = 2; index < 22; ++index) {  // from field 2 (the name) to field 22
        field = std::strchr(field + 1, ' ');
        if (field == nullptr) return 0;
    }
    return std::strtoull(field + 1, nullptr, 10);
}

/** Whether the process that made a segment still runs: a process `pid` exists (of another user
 *  counts) and, where both start times are known, it is the same process and not a later one that
 *  was given the same id (a restarted container's processes get the same ids again). */
bool creator_running(std::int64_t pid, std::uint64_t start) {
    if (pid <= 0) return false;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
    const std::uint64_t now = process_start_ticks(pid);
    return start == 0 || now == 0 || now == start;
}

}  // namespace

Mapping::~Mapping() {
    if (addr_ != nullptr) ::munmap(addr_, length_);
}

std::unique_ptr<NoiseTable> NoiseTable::create_private(std::size_t size, std::uint64_t seed,
                                                       std::size_t threads) {
    const std::size_t bytes = (size == 0 ? 1 : size) * sizeof(float);
    check_fits_in_memory(bytes);
    void* addr = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (addr == MAP_FAILED) throw_errno(errno, "cannot map " + std::to_string(bytes) + " bytes");
#ifdef MADV_HUGEPAGE
    ::madvise(addr, bytes, MADV_HUGEPAGE);  // fewer page faults and TLB misses; advisory only
#endif
    std::unique_ptr<NoiseTable> table(new NoiseTable());
    table->mapping_ = std::make_shared<Mapping>(addr, bytes);
    table->data_ = static_cast<const float*>(addr);
    table->size_ = size;
    table->seed_ = seed;
    table->owner_ = true;
    table->pool_ = std::make_unique<ThreadPool>(threads);
    table->generate();
    ::mprotect(addr, bytes, PROT_READ);
    return table;
}

void NoiseTable::generate() {
    float* out = const_cast<float*>(data_);
    const std::size_t tasks = (size_ + kGenerateChunk - 1) / kGenerateChunk;
    pool_->run(tasks, [&](std::size_t task) {
        const std::size_t begin = task * kGenerateChunk;
        const std::size_t end = begin + kGenerateChunk < size_ ? begin + kGenerateChunk : size_;
#ifdef MADV_POPULATE_WRITE
        // Fault the chunk's pages in with one call rather than one trap per page; each thread does
        // its own chunks, so the kernel's page allocation runs in parallel too. Advisory: on
        // kernels without it (before 5.14) the pages fault in as they are written.
        const std::uintptr_t page = 4096;
        const auto first = reinterpret_cast<std::uintptr_t>(out + begin) / page * page;
        const auto last = reinterpret_cast<std::uintptr_t>(out + end);
        ::madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE);
#endif
        fill_gaussian(seed_, begin, end - begin, out + begin);
    });
}

std::unique_ptr<NoiseTable> NoiseTable::create_shared(const std::string& name, std::size_t size,
                                                      std::uint64_t seed, std::size_t threads) {
    const std::size_t bytes = kSharedHeaderBytes + size * sizeof(float);
    check_fits_in_memory(bytes);
    int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    int err = errno;
    if (fd < 0 && err == EEXIST && remove_if_stale(name)) {
        fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        err = errno;
    }
    if (fd < 0) {
        throw_errno(err, err == EEXIST ? "shared noise table '" + name + "' already exists"
                                       : "cannot create shared noise table '" + name + "'");
    }
    FdGuard guard{fd};
    // Locked before it has a size or a header: a cleaner that gets the exclusive lock first finds
    // no header and leaves the segment alone, and this call waits for it.
    if (::flock(fd, LOCK_SH) != 0) {
        err = errno;
        ::shm_unlink(name.c_str());
        throw_errno(err, "cannot lock shared noise table '" + name + "'");
    }
    // tmpfs hands out pages on first touch and a write to a page it cannot supply kills the
    // process with SIGBUS, so check the free space first. (posix_fallocate would be airtight but
    // zeroes the whole segment on one thread, which costs more than generating it.)
    struct statvfs fs;
    const bool fits = ::fstatvfs(fd, &fs) != 0 ||
                      static_cast<unsigned long long>(fs.f_bavail) * fs.f_frsize >= bytes;
    if (!fits || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
        const int err = fits ? errno : ENOSPC;
        ::shm_unlink(name.c_str());
        throw_errno(err, "cannot allocate " + std::to_string(bytes) +
                             " bytes of shared memory for '" + name + "'");
    }
    void* addr = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) {
        const int map_err = errno;
        ::shm_unlink(name.c_str());
        throw_errno(map_err, "cannot map shared noise table '" + name + "'");
    }
    auto* header = static_cast<SharedHeader*>(addr);
    std::memcpy(header->magic, kMagic, sizeof kMagic);
    header->layout_version = kSharedLayoutVersion;
    header->size = size;
    header->seed = seed;
    header->creator_pid = static_cast<std::int64_t>(::getpid());
    header->creator_start = process_start_ticks(header->creator_pid);
    __atomic_store_n(&header->state, kStateGenerating, __ATOMIC_RELEASE);

    std::unique_ptr<NoiseTable> table(new NoiseTable());
    table->mapping_ = std::make_shared<Mapping>(addr, bytes);
    table->data_ = reinterpret_cast<const float*>(static_cast<char*>(addr) + kSharedHeaderBytes);
    table->size_ = size;
    table->seed_ = seed;
    table->name_ = name;
    table->owner_ = true;
    table->lock_fd_ = guard.fd;
    guard.fd = -1;
    table->pool_ = std::make_unique<ThreadPool>(threads);
    table->generate();
    __atomic_store_n(&header->state, kStateReady, __ATOMIC_RELEASE);
    ::mprotect(addr, bytes, PROT_READ);
    return table;
}

std::unique_ptr<NoiseTable> NoiseTable::attach(const std::string& name, std::size_t threads) {
    const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
    if (fd < 0) {
        const int err = errno;
        throw_errno(err, err == ENOENT ? "no shared noise table named '" + name + "'"
                                       : "cannot open shared noise table '" + name + "'");
    }
    FdGuard guard{fd};
    struct stat st;
    if (::fstat(fd, &st) != 0) throw_errno(errno, "cannot stat '" + name + "'");
    const std::size_t bytes = static_cast<std::size_t>(st.st_size);
    if (bytes < kSharedHeaderBytes) {
        throw_errno(EAGAIN, "shared noise table '" + name + "' is still being created");
    }
    void* addr = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) throw_errno(errno, "cannot map shared noise table '" + name + "'");
    auto mapping = std::make_shared<Mapping>(addr, bytes);
    const auto* header = static_cast<const SharedHeader*>(addr);
    static const char kZeros[8] = {};
    if (std::memcmp(header->magic, kZeros, sizeof kZeros) == 0) {
        throw_errno(EAGAIN, "shared noise table '" + name + "' is still being created");
    }
    if (std::memcmp(header->magic, kMagic, sizeof kMagic) != 0) {
        throw_errno(EINVAL, "shared memory '" + name + "' is not an esfast noise table");
    }
    if (__atomic_load_n(&header->state, __ATOMIC_ACQUIRE) != kStateReady) {
        throw_errno(EAGAIN, "shared noise table '" + name + "' is still being generated");
    }
    if (header->layout_version != kSharedLayoutVersion) {
        throw_errno(EINVAL, "shared noise table '" + name + "' has layout version " +
                                std::to_string(header->layout_version) + ", this esfast reads " +
                                std::to_string(kSharedLayoutVersion));
    }
    if (kSharedHeaderBytes + header->size * sizeof(float) != bytes) {
        throw_errno(EINVAL, "shared noise table '" + name + "' has an inconsistent size");
    }
    std::unique_ptr<NoiseTable> table(new NoiseTable());
    table->data_ = reinterpret_cast<const float*>(static_cast<const char*>(addr) + kSharedHeaderBytes);
    table->size_ = header->size;
    table->seed_ = header->seed;
    table->mapping_ = std::move(mapping);
    table->name_ = name;
    table->owner_ = false;
    table->pool_ = std::make_unique<ThreadPool>(threads);
    return table;
}

bool NoiseTable::remove_if_stale(const std::string& name) {
    const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
    if (fd < 0) return false;
    FdGuard guard{fd};
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) return false;  // its creator holds it: running
    struct stat st;
    if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < kSharedHeaderBytes) return false;
    void* addr = ::mmap(nullptr, kSharedHeaderBytes, PROT_READ, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) return false;
    Mapping mapping(addr, kSharedHeaderBytes);
    const auto* header = static_cast<const SharedHeader*>(addr);
    if (std::memcmp(header->magic, kMagic, sizeof kMagic) != 0) return false;
    if (creator_running(header->creator_pid, header->creator_start)) return false;
    return ::shm_unlink(name.c_str()) == 0;
}

void NoiseTable::close() {
    if (owner_ && !name_.empty() && mapping_ != nullptr) ::shm_unlink(name_.c_str());
    if (lock_fd_ >= 0) ::close(lock_fd_);
    lock_fd_ = -1;
    mapping_.reset();
    data_ = nullptr;
}

NoiseTable::~NoiseTable() { close(); }

}  // namespace esfast
