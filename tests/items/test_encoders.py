"""The encoder contract: the default multilingual text encoder, plugging in others, colour histograms."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from journeymap.exceptions import JourneymapError
from journeymap.items import (
    ColourHistogramEncoder,
    UniversalSentenceEncoder,
    default_text_encoder,
    encode_texts,
    load_item_vectors,
    read_rgb,
    refresh_item_vectors,
    resolve_encoder,
    similar_items,
)
from journeymap.items._encoders import _use_model
from tests.items.conftest import WordsEncoder, add_rows, catalog_rows, catalog_store


def test_the_default_encoder_is_multilingual_use_loaded_once():
    encoder = resolve_encoder(None)
    assert encoder is default_text_encoder() and isinstance(encoder, UniversalSentenceEncoder)
    assert (encoder.name, encoder.dim) == ("use-multilingual-v3", 512)
    vectors = encoder.encode(["red running shoes", "红色跑鞋", "green tea"])
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # The same meaning in Chinese is closer than another product in English.
    assert vectors[0] @ vectors[1] > 0.7 and vectors[0] @ vectors[2] < 0.3
    UniversalSentenceEncoder().encode(["again"])
    assert _use_model.cache_info().currsize == 1  # one model per process, shared by every instance
    assert encoder.encode([]).shape == (0, 512)


def test_encode_texts_batches_and_matches_one_by_one():
    texts = ["Waterproof hiking jacket", "RED RETROSPOT MUG", "red retrospot mug", "Wanderjacke"]
    together = encode_texts(texts, batch_size=3)
    one_by_one = np.vstack([encode_texts([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(together[1], together[2], atol=1e-6)  # capitals read as lower case


def test_another_encoder_plugs_in_by_object_or_dotted_path():
    assert isinstance(resolve_encoder("tests.items.conftest:WordsEncoder"), WordsEncoder)
    assert resolve_encoder("tests.items.conftest:WordsEncoder") is resolve_encoder("tests.items.conftest:WordsEncoder")
    np.testing.assert_allclose(encode_texts(["tea mug"], WordsEncoder())[0], WordsEncoder().expected("tea mug"))
    with pytest.raises(JourneymapError, match="An encoder path looks like 'package.module:ClassName'. Got 'nope'."):
        resolve_encoder("nope")
    with pytest.raises(JourneymapError, match="Cannot load the encoder 'tests.items.conftest:Missing'"):
        resolve_encoder("tests.items.conftest:Missing")
    with pytest.raises(JourneymapError, match="42 is not an encoder: it lacks name, dim, encode."):
        resolve_encoder(42)
    with pytest.raises(JourneymapError, match="encode_texts needs a text encoder; 'colour-histogram-4' encodes images."):
        encode_texts(["x"], ColourHistogramEncoder())


# -- images -------------------------------------------------------------------------------------

RED, BLUE, GREEN, WHITE = (230, 20, 20), (20, 40, 220), (30, 200, 60), (255, 255, 255)


def picture(*colours: tuple[int, int, int], width: int = 6, height: int = 4) -> np.ndarray:
    """Vertical stripes of equal width, one per colour, as uint8 (height, width, 3)."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    for i, colour in enumerate(colours):
        rgb[:, i * width // len(colours):(i + 1) * width // len(colours)] = colour
    return rgb


def write_png(path: Path, rgb: np.ndarray, alpha: bool = False) -> Path:
    """A PNG whose rows cycle through all five filter types, so the reader must undo each."""
    pixels = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]) if alpha else rgb
    height, width, bpp = pixels.shape
    rows = pixels.reshape(height, width * bpp).astype(np.int64)
    raw = bytearray()
    for y in range(height):
        kind, line = y % 5, rows[y]
        above = rows[y - 1] if y else np.zeros_like(line)
        left = np.concatenate([np.zeros(bpp, np.int64), line[:-bpp]])
        corner = np.concatenate([np.zeros(bpp, np.int64), above[:-bpp]])
        if kind == 4:
            p = left + above - corner
            pa, pb, pc = abs(p - left), abs(p - above), abs(p - corner)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, above, corner))
        else:
            predictor = [0 * line, left, above, (left + above) // 2][kind]
        raw += bytes([kind]) + bytes(((line - predictor) % 256).astype(np.uint8))

    return png_file(path, width, height, 6 if alpha else 2, bytes(raw))


def png_file(path: Path, width: int, height: int, colour_type: int, raw: bytes, palette: bytes = b"",
             depth: int = 8) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + (chunk(b"PLTE", palette) if palette else b"")
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def write_ppm(path: Path, rgb: np.ndarray) -> Path:
    height, width, _ = rgb.shape
    path.write_bytes(f"P6\n# made by a test\n{width} {height}\n255\n".encode() + rgb.tobytes())
    return path


def test_png_and_ppm_are_read_exactly_with_numpy(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_rgb(write_png(tmp_path / "a.png", rgb)), rgb)
    np.testing.assert_array_equal(read_rgb(write_png(tmp_path / "b.png", rgb, alpha=True)), rgb)
    np.testing.assert_array_equal(read_rgb(write_ppm(tmp_path / "c.ppm", rgb)), rgb)
    # Palette, grey and 16-bit PNGs, rows unfiltered: 2 x 2 pixels.
    palette = png_file(tmp_path / "p.png", 2, 2, 3, b"\0\0\1" + b"\0\1\0", palette=bytes(RED + BLUE))
    np.testing.assert_array_equal(read_rgb(palette), [[RED, BLUE], [BLUE, RED]])
    grey = png_file(tmp_path / "g.png", 2, 2, 0, b"\0\x00\x80" + b"\0\xff\x10")
    np.testing.assert_array_equal(read_rgb(grey)[:, :, 0], [[0, 128], [255, 16]])
    deep = png_file(tmp_path / "d.png", 1, 1, 2, b"\0" + bytes([200, 1, 100, 2, 50, 3]), depth=16)
    np.testing.assert_array_equal(read_rgb(deep), [[[200, 100, 50]]])
    (tmp_path / "d.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(JourneymapError, match="only PNG and PPM files are read. Install it with: pip install pillow"):
        read_rgb(tmp_path / "d.jpg")


def test_colour_histogram_vectors_are_exact(tmp_path):
    encoder = ColourHistogramEncoder()
    assert (encoder.name, encoder.dim) == ("colour-histogram-4", 64)
    red = write_png(tmp_path / "red.png", picture(RED))
    red_blue = write_ppm(tmp_path / "red-blue.ppm", picture(RED, BLUE))
    green = write_png(tmp_path / "green.png", picture(GREEN))
    vectors = encoder.encode([red, red_blue, green])
    # 4 levels per channel: red (230, 20, 20) is bin (3, 0, 0) = 48; blue (20, 40, 220) is (0, 0, 3) = 3.
    expected = np.zeros((3, 64), dtype=np.float32)
    expected[0, 48] = 1.0
    expected[1, [3, 48]] = np.sqrt(0.5)
    expected[2, (0 * 4 + 3) * 4 + 0] = 1.0  # green (30, 200, 60) is (0, 3, 0) = 12
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)
    # Cosine is the Bhattacharyya coefficient: same colours 1, half shared 0.71, none 0.
    np.testing.assert_allclose(vectors @ vectors.T, [[1, 0.5**0.5, 0], [0.5**0.5, 1, 0], [0, 0, 1]], atol=1e-6)
    with pytest.raises(JourneymapError, match="ColourHistogramEncoder takes bins of 2, 4, 8 or 16 per channel. Got 3."):
        ColourHistogramEncoder(bins=3)


def test_image_vectors_come_from_item_images_and_are_cached(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "red-shoe.png", picture(RED, WHITE))
    write_png(images / "red-cap.png", picture(RED, RED, WHITE))
    write_png(images / "green-tea.png", picture(GREEN))
    store = catalog_store(tmp_path, [
        {"item_id": "shoe", "name": "Running shoe", "image": "images/red-shoe.png"},  # relative to the store
        {"item_id": "cap", "name": "Cap", "image": str(images / "red-cap.png")},
        {"item_id": "tea", "name": "Green tea", "image": "images/green-tea.png"},
        {"item_id": "gone", "name": "Old item", "image": "images/missing.png"},
        {"item_id": "web", "name": "Web item", "image": "https://cdn.example.com/x.png"},
        {"item_id": "plain", "name": "No picture"},
    ])
    encoder = ColourHistogramEncoder()
    first = refresh_item_vectors(store, encoder)
    assert (first.modality, first.items, first.encoded, first.missing) == ("image", 3, 3, 2)
    assert refresh_item_vectors(store, encoder).encoded == 0

    result = similar_items(store, "shoe", k=2, encoder=encoder)
    assert [(m.item_id, round(m.score, 3)) for m in result.items] == [("cap", 0.986), ("tea", 0.0)]
    with pytest.raises(JourneymapError, match="Item 'plain' has no image file in the catalog of .*, so it has no colour-histogram-4 vector"):
        similar_items(store, "plain", encoder=encoder)

    write_png(images / "green-tea.png", picture(GREEN, WHITE, width=8))  # the shop replaces a picture
    assert refresh_item_vectors(store, encoder).encoded == 1
    add_rows(store, catalog_rows([{"item_id": "plain", "name": "No picture", "image": "images/green-tea.png"}]))
    assert refresh_item_vectors(store, encoder).encoded == 1
    vectors = load_item_vectors(store, encoder, refresh=False)
    np.testing.assert_allclose(vectors.vector("plain"), vectors.vector("tea"))
    # Text and image vectors of one store live side by side.
    assert refresh_item_vectors(store, WordsEncoder()).items == 6
