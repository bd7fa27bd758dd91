/*
 * icefs: a fallocate handler for the FUSE session pyfuse3 makes.
 *
 * pyfuse3 (3.5) registers no fallocate handler, so the kernel answers every
 * fallocate(2) with EOPNOTSUPP.  This library, loaded with RTLD_GLOBAL before
 * pyfuse3 (icefs/fuse/fallocate.py), defines fuse_session_new: pyfuse3's call
 * binds to it, and it hands libfuse pyfuse3's operations plus one for fallocate,
 * which answers with what the Python handler set by icefs_set_fallocate returns
 * (an errno, 0 for success).  The handler runs on the thread that processes the
 * request, which holds the GIL (pyfuse3 processes requests on its trio thread);
 * ctypes takes the GIL around the call anyway.
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 34
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <fuse_lowlevel.h>

typedef int (*icefs_fallocate_fn)(uint64_t fh, int mode, int64_t offset, int64_t length);
typedef struct fuse_session *(*session_new_fn)(struct fuse_args *,
                                               const struct fuse_lowlevel_ops *, size_t, void *);

static icefs_fallocate_fn handler = NULL;
static struct fuse_lowlevel_ops operations;

/* Set (or clear, with NULL) the function that answers fallocate requests. */
void icefs_set_fallocate(icefs_fallocate_fn fn) { handler = fn; }

/* Whether this library's fuse_session_new made the session (1) or not yet (0). */
static int installed = 0;
int icefs_fallocate_installed(void) { return installed; }

static void icefs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                            off_t length, struct fuse_file_info *fi) {
    (void)ino;
    /* EOPNOTSUPP, not ENOSYS: ENOSYS would turn fallocate off for the mount's life */
    int err = handler != NULL ? handler(fi->fh, mode, offset, length) : EOPNOTSUPP;
    fuse_reply_err(req, err);
}

struct fuse_session *fuse_session_new(struct fuse_args *args,
                                      const struct fuse_lowlevel_ops *op, size_t op_size,
                                      void *userdata) {
    session_new_fn real = (session_new_fn)dlsym(RTLD_NEXT, "fuse_session_new");
    if (real == NULL) {
        return NULL;
    }
    memset(&operations, 0, sizeof(operations));
    memcpy(&operations, op, op_size < sizeof(operations) ? op_size : sizeof(operations));
    if (operations.fallocate == NULL) {
        operations.fallocate = icefs_fallocate;
        installed = 1;
    }
    return real(args, &operations, sizeof(operations), userdata);
}
