# A program's --help text (stdin) as its manual page (roff, stdout), so that the
# page and the help cannot drift apart: the build makes each command's page from
# its own --help (man/mkman.cmake). POSIX awk (mawk, gawk, busybox).
#
# The help text it reads (executor-map's and executor-serve's):
#   - line 1 "usage: PROG ARGS": the SYNOPSIS;
#   - unindented paragraphs: DESCRIPTION text, filled; one that starts with
#     "Exit status:" is the EXIT STATUS section;
#   - an unindented line of its own followed by indented lines: a heading; of one
#     or two words (Options, Signals, Under systemd) a section, longer (with its
#     parenthesis) a subsection;
#   - indented lines: entries "TERM  text" whose text starts at the block's text
#     column (the column of its continuation lines), each a tagged paragraph;
#     other indented lines are text; under an Example heading, lines kept as
#     they are.
#
# Variables (-v): prog, section, title (the NAME line's words), source (e.g.
# "executor 0.1.0"), date, seealso (e.g. "executor-serve(1), libexecutor(3)").

function esc(s) {
    gsub(/\\/, "\\\\e", s)
    gsub(/-/, "\\\\-", s)
    if (s ~ /^[.']/)
        s = "\\&" s
    return s
}

function indent_of(s) {
    match(s, /^ */)
    return RLENGTH
}

function trim(s) {
    sub(/^ +/, "", s)
    sub(/ +$/, "", s)
    return s
}

# The column (0-based) where the text of base's entries starts: the most common
# indent among the block's deeper lines, else after the first gap of 2+ spaces.
function text_column(from, to, base,    i, k, cnt, best, bestn, p) {
    split("", cnt)
    best = 0
    bestn = 0
    for (i = from; i <= to; i++) {
        k = indent_of(L[i])
        if (k > base && ++cnt[k] > bestn) {
            bestn = cnt[k]
            best = k
        }
    }
    if (best)
        return best
    for (i = from; i <= to; i++) {
        if (indent_of(L[i]) != base)
            continue
        p = match(substr(L[i], base + 1), /[^ ]  +[^ ]/)
        if (p)
            return base + p + RLENGTH - 2
    }
    return 0
}

# An entry's term, when line (at indent base) has one ending at column c; else "".
function term_of(line, base, c,    t) {
    if (c <= base || length(line) <= c)
        return ""
    if (substr(line, c, 1) != " " || substr(line, c + 1, 1) == " ")
        return ""
    t = trim(substr(line, base + 1, c - base))
    if (t == "")
        return ""
    # A gap of two spaces, or a term that looks like one (an option, a code, a
    # signal, a method): "The public listener has..." is text, not an entry.
    if (substr(line, c - 1, 1) != " " && t !~ /^(-|[0-9]|[A-Z][A-Z])/)
        return ""
    gsub(/  +/, " ", t)
    return t
}

function block(from, to,    base, c, i, t, k, inentry, pre) {
    base = indent_of(L[from])
    if (sect ~ /^EXAMPLES?$/) {
        print ".PP"
        print ".nf"
        for (i = from; i <= to; i++) {
            k = indent_of(L[i]) - base
            print esc(sprintf("%" (k > 0 ? k : 0) "s", "") trim(L[i]))
        }
        print ".fi"
        return
    }
    c = text_column(from, to, base)
    inentry = 0
    pre = 1 # a .PP is due before text
    for (i = from; i <= to; i++) {
        k = indent_of(L[i])
        if (k > base) {
            print esc(trim(L[i]))
            continue
        }
        t = term_of(L[i], base, c)
        if (t != "") {
            print ".TP"
            print "\\fB" esc(t) "\\fR"
            print esc(trim(substr(L[i], c + 1)))
            inentry = 1
            continue
        }
        if (inentry || pre)
            print ".PP"
        inentry = 0
        pre = 0
        print esc(trim(L[i]))
    }
}

function heading(h,    words) {
    words = split(h, _w, " ")
    if (words <= 2 && h !~ /[()]/) {
        sect = toupper(h)
        print ".SH \"" esc(sect) "\""
    } else {
        print ".SS \"" esc(h) "\""
    }
}

{
    sub(/[ \t\r]+$/, "")
    L[++n] = $0
}

END {
    if (L[1] !~ /^usage: /) {
        print "help2roff.awk: the help does not start with 'usage: '" > "/dev/stderr"
        exit 1
    }
    syn = substr(L[1], 8)
    split(syn, w, " ")
    print ".\\\" Made from `" prog " --help' by man/help2roff.awk: edit the help text, not this."
    print ".TH \"" toupper(esc(prog)) "\" \"" section "\" \"" date "\" \"" source "\" \"User Commands\""
    print ".nh"   # no hyphenation: an option's name is never broken
    print ".ad l" # left-aligned
    print ".SH NAME"
    print esc(prog) " \\- " esc(title)
    print ".SH SYNOPSIS"
    print "\\fB" esc(w[1]) "\\fR " esc(substr(syn, length(w[1]) + 2))
    print ".SH DESCRIPTION"
    sect = "DESCRIPTION"
    i = 2
    while (i <= n) {
        if (L[i] == "") {
            i++
            continue
        }
        if (indent_of(L[i]) > 0) {
            j = i
            while (j + 1 <= n && L[j + 1] != "" && indent_of(L[j + 1]) > 0)
                j++
            block(i, j)
            i = j + 1
            continue
        }
        j = i
        while (j + 1 <= n && L[j + 1] != "" && indent_of(L[j + 1]) == 0)
            j++
        if (j == i && i + 1 <= n && L[i + 1] != "" && indent_of(L[i + 1]) > 0) {
            heading(L[i])
            i++
            continue
        }
        if (L[i] ~ /^Exit status: /) {
            sect = "EXIT STATUS"
            print ".SH \"EXIT STATUS\""
            L[i] = substr(L[i], 14)
        } else {
            print ".PP"
        }
        for (k = i; k <= j; k++)
            print esc(L[k])
        i = j + 1
    }
    if (seealso != "") {
        print ".SH \"SEE ALSO\""
        ns = split(seealso, sa, /, */)
        for (k = 1; k <= ns; k++) {
            p = index(sa[k], "(")
            print "\\fB" esc(substr(sa[k], 1, p - 1)) "\\fR" substr(sa[k], p) (k < ns ? "," : "")
        }
    }
}
