/*
 * CSV fields as process() sees them: exec_csv_split(), exec_csv_field(), and
 * header rows resolving names; malformed records get their code, never a
 * crash; a small buffer gets EXEC_ENOBUFS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "executor_records.h"
#include "suite.h"

#include <stdlib.h>
#include <string.h>

/* Splits rec and compares with want (NULL-terminated). */
static void check_split(const char *rec, const char *const *want)
{
    exec_field_t f[16];
    char buf[256];
    int n = exec_csv_split(rec, strlen(rec), 0, f, 16, buf, sizeof buf);
    int k = 0;
    while (want[k])
        k++;
    if (n != k)
        fail_msg("'%s': %d fields, want %d", rec, n, k);
    for (int i = 0; i < k; i++) {
        if (f[i].len != strlen(want[i]) || memcmp(f[i].data, want[i], f[i].len) != 0)
            fail_msg("'%s': field %d is '%.*s', want '%s'", rec, i, (int)f[i].len, f[i].data,
                     want[i]);
        /* exec_csv_field() agrees with exec_csv_split(). */
        exec_field_t one;
        char b2[256];
        assert_int_equal(exec_csv_field(rec, strlen(rec), ',', (size_t)i, &one, b2, sizeof b2),
                         0);
        assert_int_equal(one.len, f[i].len);
        assert_memory_equal(one.data, want[i], one.len);
    }
    exec_field_t one;
    assert_int_equal(exec_csv_field(rec, strlen(rec), 0, (size_t)k, &one, buf, sizeof buf),
                     EXEC_ENOENT);
}

#define SPLIT(rec, ...)                                                                  \
    do {                                                                                 \
        static const char *const w_[] = {__VA_ARGS__, NULL};                             \
        check_split(rec, w_);                                                            \
    } while (0)

static void test_split(void **state)
{
    (void)state;
    SPLIT("a,b,c", "a", "b", "c");
    SPLIT("a", "a");
    SPLIT(",", "", "");
    SPLIT("a,", "a", "");
    SPLIT(",a", "", "a");
    SPLIT(",,", "", "", "");
    SPLIT("\"\"", "");
    SPLIT("\"\",\"\"", "", "");
    SPLIT("\"a,b\",c", "a,b", "c");
    SPLIT("\"a\"\"b\"", "a\"b");
    SPLIT("\"\"\"\"", "\"");
    SPLIT("\"\"\"a\"\"\",\"x\"\"\"", "\"a\"", "x\"");
    SPLIT("\"line\nbreak\",\"crlf\r\nin\"", "line\nbreak", "crlf\r\nin");
    SPLIT(" a , b ", " a ", " b "); /* spaces are data, as RFC 4180 says */
    SPLIT("1,\"x, \"\"y\"\"\",3", "1", "x, \"y\"", "3");
    /* An empty record has no fields (csv.reader gives []). */
    exec_field_t f[2];
    assert_int_equal(exec_csv_split("", 0, 0, f, 2, NULL, 0), 0);
    assert_int_equal(exec_csv_field("", 0, 0, 0, f, NULL, 0), EXEC_ENOENT);
}

static void test_zero_copy(void **state)
{
    (void)state;
    /* Fields without "" point into the record; no buffer is needed. */
    const char *rec = "abc,\"d,e\",f";
    exec_field_t f[3];
    assert_int_equal(exec_csv_split(rec, strlen(rec), 0, f, 3, NULL, 0), 3);
    assert_ptr_equal(f[0].data, rec);
    assert_ptr_equal(f[1].data, rec + 5);
    assert_int_equal(f[1].len, 3);
    /* With "" a buffer is needed: EXEC_ENOBUFS when it is too small. */
    const char *q = "\"a\"\"bcdef\",\"x\"\"y\"";
    char buf[16];
    assert_int_equal(exec_csv_split(q, strlen(q), 0, f, 3, NULL, 0), EXEC_ENOBUFS);
    assert_int_equal(exec_csv_split(q, strlen(q), 0, f, 3, buf, 4), EXEC_ENOBUFS);
    assert_int_equal(exec_csv_split(q, strlen(q), 0, f, 3, buf, 9), EXEC_ENOBUFS);
    assert_int_equal(exec_csv_split(q, strlen(q), 0, f, 3, buf, 10), 2);
    assert_int_equal(f[0].len, 7);
    assert_memory_equal(f[0].data, "a\"bcdef", 7);
    assert_memory_equal(f[1].data, "x\"y", 3);
    /* Counting only (max 0) needs no buffer either. */
    assert_int_equal(exec_csv_split(q, strlen(q), 0, NULL, 0, NULL, 0), 2);
    /* More fields than room: the count, and the first max filled. */
    assert_int_equal(exec_csv_split("1,2,3,4", 7, 0, f, 2, NULL, 0), 4);
    assert_int_equal(f[1].len, 1);
    assert_memory_equal(f[1].data, "2", 1);
    /* exec_csv_field() only unquotes the field it returns. */
    exec_field_t one;
    assert_int_equal(exec_csv_field(q, strlen(q), 0, 1, &one, buf, 3), 0);
    assert_memory_equal(one.data, "x\"y", 3);
    /* Another delimiter. */
    assert_int_equal(exec_csv_split("a;\"b;c\";", 8, ';', f, 3, NULL, 0), 3);
    assert_int_equal(f[1].len, 3);
    assert_int_equal(f[2].len, 0);
    assert_int_equal(exec_csv_split("a\tb", 3, '\t', f, 3, NULL, 0), 2);
}

static void test_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *rec;
        int code;
    } bad[] = {
        {"a\"b", EXEC_EBADQUOTE},     {"\"a\"b", EXEC_EBADQUOTE},
        {"x,\"a\" ", EXEC_EBADQUOTE}, {"\"abc", EXEC_EUNTERMINATED},
        {"a,\"", EXEC_EUNTERMINATED}, {"\"a\"\"", EXEC_EUNTERMINATED},
        {"\"", EXEC_EUNTERMINATED},   {"a,b\"", EXEC_EBADQUOTE},
    };
    char buf[64];
    exec_field_t f[4];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int n = exec_csv_split(bad[i].rec, strlen(bad[i].rec), 0, f, 4, buf, sizeof buf);
        if (n != bad[i].code)
            fail_msg("'%s': got %d, want %s", bad[i].rec, n, exec_err_name(bad[i].code));
    }
    /* Fields before the bad one are still readable by index. */
    exec_field_t one;
    assert_int_equal(exec_csv_field("ok,a\"b", 6, 0, 0, &one, buf, sizeof buf), 0);
    assert_int_equal(exec_csv_field("ok,a\"b", 6, 0, 1, &one, buf, sizeof buf), EXEC_EBADQUOTE);
    /* Bad arguments. */
    assert_int_equal(exec_csv_split(NULL, 1, 0, f, 4, buf, 4), EXEC_EINVAL);
    assert_int_equal(exec_csv_split("a", 1, 0, NULL, 4, buf, 4), EXEC_EINVAL);
    assert_int_equal(exec_csv_split("a", 1, '"', f, 4, buf, 4), EXEC_EINVAL);
    assert_int_equal(exec_csv_split("a", 1, 300, f, 4, buf, 4), EXEC_EINVAL);
    assert_int_equal(exec_csv_field("a", 1, 0, 0, NULL, buf, 4), EXEC_EINVAL);
    /* Line ends are never delimiters, as for the record sources. */
    assert_int_equal(exec_csv_split("a\rb", 3, '\r', f, 4, buf, 4), EXEC_EINVAL);
    assert_int_equal(exec_csv_split("a\nb", 3, '\n', f, 4, buf, 4), EXEC_EINVAL);
    assert_int_equal(exec_csv_field("a\rb", 3, '\r', 0, &one, buf, 4), EXEC_EINVAL);
    assert_int_equal(exec_csv_split("a\xfe" "b", 3, 0xfe, f, 4, buf, 4), 2);
    /* Every prefix of a tricky record: a code or a count, never a crash. */
    const char *t = "\"a\"\"b\",\"c\nd\",,\"\"\"\",e\"f,\"g";
    for (size_t n = 0; n <= strlen(t); n++) {
        char *copy = malloc(n ? n : 1); /* exact size: ASan sees any overread */
        memcpy(copy, t, n);
        int r = exec_csv_split(copy, n, 0, f, 4, buf, sizeof buf);
        assert_true(r >= 0 || r == EXEC_EBADQUOTE || r == EXEC_EUNTERMINATED);
        free(copy);
    }
}

static void test_header(void **state)
{
    (void)state;
    const char *row = "id,\"full name\",\"say \"\"hi\"\"\",text,id";
    exec_csv_header_t *h;
    assert_int_equal(exec_csv_header_create(&h, row, strlen(row), 0), 0);
    assert_int_equal(exec_csv_header_count(h), 5);
    assert_string_equal(exec_csv_header_name(h, 1), "full name");
    assert_string_equal(exec_csv_header_name(h, 2), "say \"hi\"");
    assert_null(exec_csv_header_name(h, 5));
    assert_int_equal(exec_csv_header_index(h, "id"), 0); /* the first of two */
    assert_int_equal(exec_csv_header_index(h, "text"), 3);
    assert_int_equal(exec_csv_header_index(h, "say \"hi\""), 2);
    assert_int_equal(exec_csv_header_index(h, "nope"), EXEC_ENOENT);
    assert_int_equal(exec_csv_header_index(h, NULL), EXEC_EINVAL);
    assert_int_equal(exec_csv_header_delim(h), ',');

    const char *rec = "7,\"Ann \"\"A\"\" Lee\",x,\"hello, world\",8";
    exec_field_t f;
    char buf[64];
    assert_int_equal(exec_csv_get(h, rec, strlen(rec), "text", &f, buf, sizeof buf), 0);
    assert_int_equal(f.len, 12);
    assert_memory_equal(f.data, "hello, world", 12);
    assert_int_equal(exec_csv_get(h, rec, strlen(rec), "full name", &f, buf, sizeof buf), 0);
    assert_memory_equal(f.data, "Ann \"A\" Lee", 11);
    assert_int_equal(exec_csv_get(h, rec, strlen(rec), "nope", &f, buf, sizeof buf),
                     EXEC_ENOENT);
    assert_int_equal(exec_csv_get(h, "1,2", 3, "text", &f, buf, sizeof buf), EXEC_ENOENT);
    exec_csv_header_free(h);

    assert_int_equal(exec_csv_header_create(&h, "a;b", 3, ';'), 0);
    assert_int_equal(exec_csv_header_count(h), 2);
    assert_int_equal(exec_csv_header_delim(h), ';');
    assert_int_equal(exec_csv_get(h, "1;2", 3, "b", &f, NULL, 0), 0);
    assert_memory_equal(f.data, "2", 1);
    exec_csv_header_free(h);

    assert_int_equal(exec_csv_header_create(&h, "", 0, 0), 0);
    assert_int_equal(exec_csv_header_count(h), 0);
    exec_csv_header_free(h);

    h = (exec_csv_header_t *)state;
    assert_int_equal(exec_csv_header_create(&h, "a,\"b", 4, 0), EXEC_EUNTERMINATED);
    assert_null(h);
    assert_int_equal(exec_csv_header_create(NULL, "a", 1, 0), EXEC_EINVAL);
    assert_int_equal(exec_csv_header_create(&h, "a\rb", 3, '\r'), EXEC_EINVAL);
    assert_null(h);
    assert_int_equal(exec_csv_header_count(NULL), 0);
    assert_null(exec_csv_header_name(NULL, 0));
    exec_csv_header_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_zero_copy),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_header),
    };
    return tu_run_group_tests(tests, NULL, NULL);
}
