/* A write that fails with ENOSPC, injected under a real process with LD_PRELOAD: while the file named by
 * $WB_ENOSPC_WHILE exists, every write to a file whose path contains $WB_ENOSPC_MATCH fails as on a full disk.
 * Built by the tests that need it (tests/faults/__init__.py); never part of the product. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int full(int fd) {
    const char *flag = getenv("WB_ENOSPC_WHILE"), *match = getenv("WB_ENOSPC_MATCH");
    char link[64], path[4096];
    ssize_t n;
    if (!flag || !match || access(flag, F_OK) != 0) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strstr(path, match) != NULL;
}

#define REAL(name, type) static type real = NULL; if (!real) real = (type)dlsym(RTLD_NEXT, name)

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);

ssize_t write(int fd, const void *buf, size_t count) {
    REAL("write", write_fn);
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL("pwrite", pwrite_fn);
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    REAL("pwrite64", pwrite_fn);
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real(fd, buf, count, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    REAL("writev", writev_fn);
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real(fd, iov, iovcnt);
}
