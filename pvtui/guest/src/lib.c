/* Freestanding helpers: memory, strings, a tiny printf, the clock, the command line. */
#include <stdarg.h>
#include "kernel.h"

void *memset(void *dst, int c, unsigned long n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

void *memcpy(void *dst, const void *src, unsigned long n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

unsigned long strlen(const char *s)
{
    unsigned long n = 0;
    while (s[n])
        n++;
    return n;
}

int strncmp(const char *a, const char *b, unsigned long n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (unsigned char)*a - (unsigned char)*b;
        if (!*a)
            return 0;
    }
    return 0;
}

struct out { char *buf; unsigned long size, len; };

static void put(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void put_u64(struct out *o, u64 v, unsigned base, int width, char pad)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (width-- > n)
        put(o, pad);
    while (n)
        put(o, tmp[--n]);
}

static int vformat(char *buf, unsigned long size, const char *fmt, va_list ap)
{
    struct out o = {buf, size, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, is_long = 0;
        if (*fmt == '0')
            pad = '0';
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            is_long = 1;
            fmt++;
        }
        switch (*fmt) {
        case 'd': {
            s64 v = is_long ? va_arg(ap, s64) : va_arg(ap, int);
            if (v < 0) {
                put(&o, '-');
                v = -v;
            }
            put_u64(&o, (u64)v, 10, width, pad);
            break;
        }
        case 'u':
            put_u64(&o, is_long ? va_arg(ap, u64) : va_arg(ap, unsigned), 10, width, pad);
            break;
        case 'x':
            put_u64(&o, is_long ? va_arg(ap, u64) : va_arg(ap, unsigned), 16, width, pad);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            while (*s)
                put(&o, *s++);
            break;
        }
        case '%':
            put(&o, '%');
            break;
        default:
            put(&o, '?');
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = 0;
    return (int)o.len;
}

int snprintf_(char *buf, unsigned long size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vformat(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

/* One console_io per line keeps lines from different vCPUs whole. */
void printk(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vformat(line, sizeof line, fmt, ap);
    va_end(ap);
    hc_console(line, n < (int)sizeof line ? (u64)n : sizeof line - 1);
}

u64 now_ns(u64 vcpu)
{
    return pv_clock_ns(&shared->vcpu_info[vcpu].time);
}

const char *cmdline_get(const char *key)
{
    unsigned long klen = strlen(key);
    const char *p = start_info->cmdline;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!strncmp(p, key, klen) && p[klen] == '=')
            return p + klen + 1;
        while (*p && *p != ' ')
            p++;
    }
    return 0;
}

u64 cmdline_u64(const char *key, u64 fallback)
{
    const char *v = cmdline_get(key);
    if (!v || *v < '0' || *v > '9')
        return fallback;
    u64 n = 0;
    while (*v >= '0' && *v <= '9')
        n = n * 10 + (u64)(*v++ - '0');
    switch (*v) {
    case 'K': n <<= 10; break;
    case 'M': n <<= 20; break;
    case 'G': n <<= 30; break;
    case 'T': n <<= 40; break;
    }
    return n;
}

int cmdline_is(const char *key, const char *value)
{
    const char *v = cmdline_get(key);
    unsigned long n = strlen(value);
    return v && !strncmp(v, value, n) && (v[n] == ' ' || v[n] == 0);
}
