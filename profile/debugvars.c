/*
 * debugvars.c - the WEFTDEBUG and WEFTTRACEBACK environment variables
 * (Go's GODEBUG and GOTRACEBACK, runtime1.go parsedebugvars), read into
 * weft__debug once per runtime by weft_main, before any M or sysmon
 * starts.
 *
 * WEFTDEBUG is a comma-separated list of key=value items:
 *   schedtrace=MS    print a schedtrace line every MS milliseconds (0: off)
 *   scheddetail=0|1  make those reports scheddetail's (P, M and G lines)
 *   sigquitdump=exit|continue
 *                    on SIGQUIT, dump and exit (default), or dump and run
 *   leakcheck=SECONDS  run the leak monitor (leakcheck.c) with this
 *                    period, 1..3600 (0: off)
 *   iouring=0|1      reads and writes of weft's stream sockets through
 *                    io_uring where the kernel has it (1, default), or
 *                    all I/O on epoll (0)
 * WEFTTRACEBACK is none|single|all|system|crash, or Go's numbers 0 (none),
 * 1 (all) and 2 (system); unset or empty: single.
 *
 * Invariants:
 *  1. weft__debug is written only here, by weft_main's thread before the
 *     runtime's threads exist (thread creation orders it before their
 *     reads), and is never written while a runtime runs: readers need no
 *     atomics. Every call starts from the defaults, so a second runtime
 *     does not inherit the settings of the first one.
 *  2. Strict but forgiving: each bad item (unknown key, no "=", a value
 *     that is not a whole number in range or not one of the listed words)
 *     prints exactly one warning line on stderr and is ignored; the good
 *     items still apply. Empty items (",," or a trailing comma, or an
 *     empty variable) are not items and are skipped silently. A repeated
 *     key: the last good value wins, as in Go.
 *  3. Never crashes and never allocates, whatever the input: items are
 *     spans of the environment string; a warning quotes at most
 *     QUOTE_MAX bytes of the item, escaping control bytes, so a warning
 *     is always one line, written with one write(2).
 *
 * Adding a setting (e.g. leakcheck=SECONDS): one row in settings[] with
 * its kind (a number with a maximum and a unit, or a list of words) and a
 * setter; a field in struct debugvars (sched/runtime.h).
 *
 * Rejected: Go's laxness (GODEBUG ignores unknown keys and, for most
 * settings, bad values without a word): a typo in a debug variable would
 * then look like "the feature does not work". Numbers in other bases or
 * with a sign or spaces: "schedtrace=1e3" or " 100" is more likely a
 * mistake than a wish.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

struct debugvars weft__debug = {.traceback = TB_SINGLE};

/* ------------------------------------------------------- warning lines */

#define WARN_MAX 512 /* a warning line, quoted item included */
#define QUOTE_MAX 96 /* bytes of an item quoted in a warning */

struct warn {
    size_t n;
    char buf[WARN_MAX];
};

static void wputn(struct warn *w, const char *s, size_t len)
{
    for (size_t i = 0; i < len && w->n < WARN_MAX - 1; i++)
        w->buf[w->n++] = s[i];
}

static void wputs(struct warn *w, const char *s)
{
    wputn(w, s, strlen(s));
}

/* wquote - s[0..len) in double quotes, control bytes, quotes and
 * backslashes escaped (so the warning stays one line), cut to QUOTE_MAX
 * bytes with "..." after the closing quote. */
static void wquote(struct warn *w, const char *s, size_t len)
{
    wputs(w, "\"");
    size_t shown = len < QUOTE_MAX ? len : QUOTE_MAX;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[5];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            wputn(w, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = "0123456789abcdef"[c >> 4];
            esc[3] = "0123456789abcdef"[c & 15];
            wputn(w, esc, 4);
        } else {
            wputn(w, (const char *)&c, 1);
        }
    }
    wputs(w, "\"");
    if (shown < len)
        wputs(w, "...");
}

static void wputu(struct warn *w, uint64_t v)
{
    char tmp[24];
    int i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    wputn(w, tmp + i, sizeof tmp - (size_t)i);
}

/* wend - end the line and write it with one write(2) (stdio may not be
 * set up the way the program wants, and one write keeps the line whole
 * between threads). */
static void wend(struct warn *w)
{
    w->buf[w->n++] = '\n';
    size_t off = 0;
    while (off < w->n) {
        ssize_t r = write(2, w->buf + off, w->n - off);
        if (r <= 0)
            break;
        off += (size_t)r;
    }
}

/* ---------------------------------------------------------- the values */

struct word {
    const char *name;
    int32_t value;
};

enum kind {
    K_NUMBER, /* decimal digits only, 0..max */
    K_WORD,   /* one of words[] */
};

struct setting {
    const char *key;
    enum kind kind;
    int32_t max;               /* K_NUMBER: largest accepted value */
    const char *unit;          /* K_NUMBER: "milliseconds", for warnings */
    const struct word *words;  /* K_WORD: accepted words, NULL-terminated */
    void (*set)(int32_t value);
};

static void set_schedtrace(int32_t v)
{
    weft__debug.schedtrace = v;
}

static void set_scheddetail(int32_t v)
{
    weft__debug.scheddetail = v != 0;
}

static void set_sigquitdump(int32_t v)
{
    weft__debug.sigquitcontinue = v != 0;
}

static void set_leakcheck(int32_t v)
{
    weft__debug.leakcheck = v;
}

static void set_iouring(int32_t v)
{
    weft__debug.nouring = v == 0;
}

static const struct word zero_one[] = {{"0", 0}, {"1", 1}, {NULL, 0}};
static const struct word sigquitdump_words[] = {
    {"exit", 0}, {"continue", 1}, {NULL, 0}};

/* The WEFTDEBUG keys. */
static const struct setting settings[] = {
    {"schedtrace", K_NUMBER, INT32_MAX, "milliseconds", NULL,
     set_schedtrace},
    {"scheddetail", K_WORD, 0, NULL, zero_one, set_scheddetail},
    {"sigquitdump", K_WORD, 0, NULL, sigquitdump_words, set_sigquitdump},
    {"leakcheck", K_NUMBER, 3600, "seconds", NULL, set_leakcheck},
    {"iouring", K_WORD, 0, NULL, zero_one, set_iouring},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

static const struct word traceback_words[] = {
    {"none", TB_NONE},     {"single", TB_SINGLE}, {"all", TB_ALL},
    {"system", TB_SYSTEM}, {"crash", TB_CRASH},   {"0", TB_NONE},
    {"1", TB_ALL},         {"2", TB_SYSTEM},      {NULL, 0}};

static bool spaneq(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

/* wwords - "a, b or c": the words a K_WORD value may take. */
static void wwords(struct warn *w, const struct word *words)
{
    size_t n = 0;
    while (words[n].name != NULL)
        n++;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            wputs(w, i == n - 1 ? " or " : ", ");
        wputs(w, words[i].name);
    }
}

/* parse_number - s[0..len) as a decimal 0..max into *v. Returns 0, -1
 * (not a number: empty, a sign, any other byte) or -2 (above max). */
static int parse_number(const char *s, size_t len, int32_t max, int32_t *v)
{
    if (len == 0)
        return -1;
    int64_t x = 0;
    bool big = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (!big) {
            x = x * 10 + (s[i] - '0');
            big = x > max; /* stop before int64 could overflow */
        }
    }
    if (big)
        return -2;
    *v = (int32_t)x;
    return 0;
}

/* parse_word - s[0..len) as one of words into *v; false if none. */
static bool parse_word(const char *s, size_t len, const struct word *words,
                       int32_t *v)
{
    for (size_t i = 0; words[i].name != NULL; i++) {
        if (spaneq(s, len, words[i].name)) {
            *v = words[i].value;
            return true;
        }
    }
    return false;
}

/* item - apply one WEFTDEBUG item s[0..len) (not empty), or warn once. */
static void item(const char *s, size_t len)
{
    const char *eq = memchr(s, '=', len);
    size_t klen = eq != NULL ? (size_t)(eq - s) : len;
    const struct setting *st = NULL;
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (spaneq(s, klen, settings[i].key)) {
            st = &settings[i];
            break;
        }
    }
    struct warn w = {0};
    wputs(&w, "weft: WEFTDEBUG: ");
    if (st == NULL) {
        wputs(&w, "unknown setting ");
        wquote(&w, s, len);
        wputs(&w, ", ignored");
        wend(&w);
        return;
    }
    if (eq == NULL) {
        wputs(&w, st->key);
        wputs(&w, " has no value (want ");
        wputs(&w, st->key);
        wputs(&w, "=...), ignored");
        wend(&w);
        return;
    }
    const char *val = eq + 1;
    size_t vlen = len - klen - 1;
    int32_t v = 0;
    wputs(&w, st->key);
    wputs(&w, "=");
    wquote(&w, val, vlen);
    if (st->kind == K_NUMBER) {
        int r = parse_number(val, vlen, st->max, &v);
        if (r == 0) {
            st->set(v);
            return;
        }
        if (r == -1) {
            wputs(&w, " is not a number of ");
        } else {
            wputs(&w, " is more than ");
            wputu(&w, (uint64_t)st->max);
            wputs(&w, " ");
        }
        wputs(&w, st->unit);
    } else {
        if (parse_word(val, vlen, st->words, &v)) {
            st->set(v);
            return;
        }
        wputs(&w, " is not ");
        wwords(&w, st->words);
    }
    wputs(&w, ", ignored");
    wend(&w);
}

static void parse_weftdebug(const char *s)
{
    while (*s != '\0') {
        const char *comma = strchr(s, ',');
        size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);
        if (len > 0) /* invariant 2: ",," is no item */
            item(s, len);
        s += len;
        if (*s == ',')
            s++;
    }
}

static void parse_wefttraceback(const char *s)
{
    int32_t v;
    if (*s == '\0') /* as Go: empty is the default */
        return;
    if (parse_word(s, strlen(s), traceback_words, &v)) {
        weft__debug.traceback = v;
        return;
    }
    struct warn w = {0};
    wputs(&w, "weft: WEFTTRACEBACK=");
    wquote(&w, s, strlen(s));
    wputs(&w, " is not ");
    wwords(&w, traceback_words);
    wputs(&w, "; using single");
    wend(&w);
}

/* weft__debug_parse - reset weft__debug to the defaults, then apply
 * WEFTDEBUG and WEFTTRACEBACK. weft_main's thread, before any M. */
void weft__debug_parse(void)
{
    weft__debug = (struct debugvars){.traceback = TB_SINGLE};
    weft__schedtrace_reset();
    const char *s = getenv("WEFTDEBUG");
    if (s != NULL)
        parse_weftdebug(s);
    s = getenv("WEFTTRACEBACK");
    if (s != NULL)
        parse_wefttraceback(s);
}
