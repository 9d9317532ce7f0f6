#!/usr/bin/env python3
"""Writes a CSV file of N rows "id,text", 8 words of text each, the same for
the same N. About a third of the words are in tests/data/words.txt, some are
capitalised, and some texts are quoted with a comma, a doubled quote or a
newline inside, so that both CSV readers and both word splitters are tested.

    make_rows.py N OUT.csv
"""
import random
import sys

TABLE_WORDS = "apple pear plum cherry cat dog horse owl hammer saw drill wrench".split()
OTHER_WORDS = ("river blue stone cloud green quick lamp road the a of and to in is it "
               "was for on with as at by from this that an be are or have not but had "
               "his her they we you one all were there their what so up out if about "
               "who get which go me when make can like time no just him know take").split()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_rows.py N OUT.csv")
    n, path = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(42)
    vocab = TABLE_WORDS * 3 + OTHER_WORDS  # about a third from the table
    with open(path, "w", encoding="ascii", newline="") as out:
        out.write("id,text\n")
        for i in range(1, n + 1):
            words = rng.choices(vocab, k=8)
            if rng.random() < 0.1:
                k = rng.randrange(8)
                words[k] = words[k].capitalize()
            text = " ".join(words)
            r = rng.random()
            if r < 0.05:
                text = '"' + text.replace(" ", ", ", 1) + '"'
            elif r < 0.07:
                text = '"' + text.replace(" ", ' ""', 1) + '"" end"'
            elif r < 0.075:
                text = '"' + text.replace(" ", "\n", 1) + '"'
            out.write(f"{i},{text}\n")


if __name__ == "__main__":
    main()
