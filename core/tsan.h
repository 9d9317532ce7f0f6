/*
 * Happens-before annotations for ThreadSanitizer, which cannot see the fences
 * inside ck and liburcu (inline asm, volatile accesses). They compile to nothing
 * outside TSan builds. Used at three places only: a batch handed over a ring,
 * a context published with RCU, and a grace period.
 */
#ifndef EXEC_TSAN_H
#define EXEC_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define EXEC__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EXEC__TSAN 1
#endif
#endif

#ifdef EXEC__TSAN
#include <sanitizer/tsan_interface.h>
#define exec__tsan_release(p) __tsan_release((void *)(p))
#define exec__tsan_acquire(p) __tsan_acquire((void *)(p))
#else
#define exec__tsan_release(p) ((void)(p))
#define exec__tsan_acquire(p) ((void)(p))
#endif

#endif
