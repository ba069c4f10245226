/* fs.h - small file-system helpers. */
#ifndef MESSENGER_FS_H
#define MESSENGER_FS_H

/* Frees an open file's blocks a slice at a time (ftruncate in steps, with a
 * pause between them) before the caller closes its last reference. Where
 * the file system discards freed blocks at once (ext4 mounted with
 * `discard`), deleting a file of hundreds of MiB in one go occupies the
 * device long enough to stall every fdatasync behind it. Returns 0 or a
 * negative errno. */
int fs_release_gently(int fd);

#endif
