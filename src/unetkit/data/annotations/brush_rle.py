"""Label Studio's brush RLE: the bit-packed run-length code of its ``brushlabels`` results.

Label Studio stores a brush mask as the RGBA image of the stroke, flattened (``H * W * 4`` bytes, the mask in
every channel), compressed with the rle-pack scheme of thi.ng/umbrella, and saved as a list of byte values.
The bit stream, most significant bit first:

* header: 32 bits ``count`` (values), 5 bits ``word size - 1``, then four 4-bit ``run-length field sizes - 1``;
* chunks until ``count`` values are out: 1 bit ``repeat``, 2 bits choosing one of the four field sizes,
  that many bits ``run length - 1``; then one word repeated run-length times (``repeat`` = 1) or that many
  literal words (``repeat`` = 0).

A mask is the alpha channel of the decoded image (Label Studio's converter reads channel 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Field sizes written by the encoder (Label Studio's defaults): runs of up to 8, 16, 256 and 65536 values.
RUN_BITS = (3, 4, 8, 16)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.bits.size:
            raise ValueError("brush RLE ends before its declared number of values")
        chunk = self.bits[self.pos : self.pos + n]
        self.pos += n
        return int("".join("1" if b else "0" for b in chunk), 2) if n else 0

    def read_words(self, n: int, size: int) -> np.ndarray:
        if self.pos + n * size > self.bits.size:
            raise ValueError("brush RLE ends before its declared number of values")
        chunk = self.bits[self.pos : self.pos + n * size].reshape(n, size).astype(np.int64)
        self.pos += n * size
        return chunk @ (1 << np.arange(size - 1, -1, -1, dtype=np.int64))


def decode(rle: Sequence[int], *, max_values: int) -> np.ndarray:
    """The flat values of a brush RLE (``H * W * 4`` bytes for a Label Studio mask).

    Args:
        rle: the byte values as Label Studio stores them.
        max_values: refuse a stream declaring more values than this (e.g. ``4 * H * W``).

    Raises:
        ValueError: not a list of bytes, truncated, or declaring more than ``max_values`` values.
    """
    if not all(isinstance(v, int) and 0 <= v <= 255 for v in rle):
        raise ValueError("brush RLE must be a list of byte values (0..255)")
    bits = _Bits(bytes(rle))
    count = bits.read(32)
    if count > max_values:
        raise ValueError(f"brush RLE declares {count} values, more than the image's {max_values}")
    word = bits.read(5) + 1
    sizes = [bits.read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.int64)
    i = 0
    while i < count:
        repeat = bits.read(1)
        n = bits.read(sizes[bits.read(2)]) + 1
        end = min(i + n, count)
        if repeat:
            out[i:end] = bits.read(word)
        else:
            out[i:end] = bits.read_words(n, word)[: end - i]
        i = end
    return out


def encode(values: np.ndarray, *, word: int = 8) -> list[int]:
    """Brush RLE of flat ``values`` (each below ``2 ** word``); runs of 2+ equal values are repeat chunks, the
    rest literal chunks, each at most 65536 values."""
    values = np.asarray(values, dtype=np.int64).ravel()
    out: list[str] = [format(values.size, "032b"), format(word - 1, "05b")]
    out += [format(b - 1, "04b") for b in RUN_BITS]
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]])) if values.size else np.array([], int)
    lengths = np.diff(np.concatenate([starts, [values.size]]))
    literal: list[int] = []
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        if length == 1:
            literal.append(int(values[start]))
            continue
        _flush(literal, out, word)
        while length > 0:
            n = min(length, 1 << RUN_BITS[-1])
            out.append("1" + _length_field(n) + format(int(values[start]), f"0{word}b"))
            length -= n
    _flush(literal, out, word)
    bits = "".join(out)
    bits += "0" * (-len(bits) % 8)
    return np.packbits(np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0")).tolist()


def _flush(literal: list[int], out: list[str], word: int) -> None:
    while literal:
        chunk, literal[:] = literal[: 1 << RUN_BITS[-1]], literal[1 << RUN_BITS[-1] :]
        out.append("0" + _length_field(len(chunk)) + "".join(format(v, f"0{word}b") for v in chunk))


def _length_field(n: int) -> str:
    index = next(k for k, b in enumerate(RUN_BITS) if n - 1 < (1 << b))
    return format(index, "02b") + format(n - 1, f"0{RUN_BITS[index]}b")


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a boolean ``(H, W)`` mask (255 in all four RGBA channels where set)."""
    flat = np.repeat(np.asarray(mask, dtype=bool).ravel().astype(np.int64) * 255, 4)
    return encode(flat)


def rle_to_mask(rle: Sequence[int], *, height: int, width: int) -> np.ndarray:
    """The boolean ``(height, width)`` mask of a brush RLE (alpha channel > 0).

    Raises:
        ValueError: malformed stream, or one that does not hold ``height * width`` RGBA pixels.
    """
    flat = decode(rle, max_values=4 * height * width)
    if flat.size != 4 * height * width:
        raise ValueError(f"brush RLE holds {flat.size} values, not {height}x{width}x4")
    return flat.reshape(height, width, 4)[..., 3] > 0
