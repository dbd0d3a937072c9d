#!/usr/bin/env python3
"""Write the seed corpus of the `translate` fuzz target.

Each seed is a 12-byte ORB followed by the first bytes of guest RAM (the
target maps them at guest address 0 of a 64 KiB RAM). Run from anywhere:
    python3 fuzz/make_corpus.py
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "translate")

# ORB word 1 bits.
FORMAT1 = 0x0080_0000
PREFETCH = 0x0040_0000
FORMAT2_IDAW = 0x0002_0000
IDAW_2K = 0x0001_0000
LPM = 0x80 << 8

# CCW flags.
CD, CC, SLI, SKIP, PCI, IDA = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04

# Commands of the sim's buffer device.
WRITE, READ, NOP, SENSE, SEEK, SENSE_ID, TIC = 0x01, 0x02, 0x03, 0x04, 0x07, 0xE4, 0x08


def orb(cpa, word1):
    return struct.pack(">III", 0x1234_5678, word1 | LPM | PREFETCH, cpa)


def ccw1(cmd, flags, count, cda):
    return struct.pack(">BBHI", cmd, flags, count, cda)


def ccw0(cmd, flags, count, cda):
    return struct.pack(">I", (cmd << 24) | cda) + struct.pack(">BBH", flags, 0, count)


class Ram:
    def __init__(self):
        self.bytes = bytearray()

    def put(self, addr, data):
        end = addr + len(data)
        if len(self.bytes) < end:
            self.bytes.extend(b"\0" * (end - len(self.bytes)))
        self.bytes[addr:end] = data

    def program(self, addr, ccws):
        for i, ccw in enumerate(ccws):
            self.put(addr + 8 * i, ccw)
        return self


def seeds():
    # SENSE ID.
    ram = Ram().program(0x100, [ccw1(SENSE_ID, SLI, 12, 0x200)])
    yield "sense-id", orb(0x100, FORMAT1), ram

    # WRITE, SEEK back, READ with data chaining and a skip.
    ram = Ram().program(0x100, [
        ccw1(WRITE, CC, 8, 0x200),
        ccw1(SEEK, CC, 4, 0x210),
        ccw1(READ, CD, 3, 0x220),
        ccw1(READ, CD | SKIP, 2, 0x230),
        ccw1(READ, SLI, 3, 0x240),
    ])
    ram.put(0x200, b"ABCDEFGH")
    ram.put(0x210, struct.pack(">I", 0))
    yield "write-seek-read-chained", orb(0x100, FORMAT1), ram

    # Format-2 IDAWs, 4K blocks: a READ crossing from one block into another.
    ram = Ram().program(0x100, [ccw1(READ, SLI | IDA, 0x40, 0x300)])
    ram.put(0x300, struct.pack(">QQ", 0xFE0, 0x2000))
    yield "idaw-format2-4k", orb(0x100, FORMAT1 | FORMAT2_IDAW), ram

    # Format-2 IDAWs, 2K blocks; format-1 IDAWs (always 2K).
    ram = Ram().program(0x100, [ccw1(WRITE, CC | IDA, 0x20, 0x300), ccw1(NOP, 0, 0, 0)])
    ram.put(0x300, struct.pack(">QQ", 0x7F0, 0x1000))
    yield "idaw-format2-2k", orb(0x100, FORMAT1 | FORMAT2_IDAW | IDAW_2K), ram
    ram = Ram().program(0x100, [ccw1(READ, SLI | IDA, 0x20, 0x300)])
    ram.put(0x300, struct.pack(">II", 0x7F0, 0x1800))
    yield "idaw-format1", orb(0x100, FORMAT1), ram

    # An endless TIC loop (the target halts it), and a TIC to a TIC.
    ram = Ram().program(0x100, [ccw1(NOP, CC, 0, 0), ccw1(TIC, 0, 0, 0x100)])
    yield "tic-loop", orb(0x100, FORMAT1), ram
    ram = Ram().program(0x100, [ccw1(TIC, 0, 0, 0x180)]).program(0x180, [ccw1(TIC, 0, 0, 0x100)])
    yield "tic-to-tic", orb(0x100, FORMAT1), ram

    # Format-0 CCWs: a chain through a format-0 TIC (low nibble 8).
    ram = Ram().program(0x100, [
        ccw0(WRITE, CC, 4, 0x200),
        ccw0(0x18, 0, 0, 0x180),
    ]).program(0x180, [ccw0(SENSE, SLI, 32, 0x220)])
    yield "format0-tic", orb(0x100, 0), ram

    # Data chaining across a TIC into a second segment, PCI, then an invalid
    # command code.
    ram = Ram().program(0x100, [
        ccw1(WRITE, CD | PCI, 4, 0x200),
        ccw1(TIC, 0, 0, 0x180),
    ]).program(0x180, [ccw1(WRITE, CC, 4, 0x204), ccw1(0x00, 0, 8, 0x200)])
    yield "data-chain-through-tic", orb(0x100, FORMAT1), ram

    # Block I/O as Linux builds it: a run of READs of one 2K block each,
    # format-2 IDAWs with the IDALs in a row; and the same with direct
    # addresses (the translator's block-at-a-time common path).
    ram = Ram().program(0x100, [
        ccw1(READ, (CC if i < 23 else 0) | IDA, 0x800, 0x400 + 8 * i) for i in range(24)
    ])
    for i in range(24):
        ram.put(0x400 + 8 * i, struct.pack(">Q", 0x1000 + 0x800 * i))
    yield "block-reads-idal", orb(0x100, FORMAT1 | FORMAT2_IDAW | IDAW_2K), ram
    ram = Ram().program(0x100, [
        ccw1(WRITE, CC if i < 23 else 0, 0x800, 0x1000 + 0x800 * i) for i in range(24)
    ])
    yield "block-writes-direct", orb(0x100, FORMAT1), ram

    # A backward TIC, then chaining on to the segment limit: the segment
    # ends in the translator's not-fetched check point (257 entries).
    ram = Ram().program(0x100, [ccw1(NOP, CC, 0, 0), ccw1(TIC, 0, 0, 0x100)] + [
        ccw1(NOP, CC, 0, 0) for _ in range(254)
    ])
    yield "tic-then-full-segment", orb(0x100, FORMAT1), ram


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, orb_bytes, ram in seeds():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(orb_bytes + bytes(ram.bytes))


if __name__ == "__main__":
    main()
