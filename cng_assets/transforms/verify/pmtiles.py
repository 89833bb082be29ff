"""A PMTiles archive against its GeoParquet source: is every feature in at least one tile at the max zoom?

Independent of the tiling code: the source's fids are read from the GeoParquet with pyarrow, the archive's from its
own directory and tiles (the `pmtiles` reader's directory and header decoding, the Mapbox Vector Tile protobuf
message of `mapbox_vector_tile`, parsed in C by protobuf; geometries are never decoded, only feature ids).
Cost stays below tiling's: only max-zoom tiles are read (leaf directories of lower zooms are skipped, PMTiles ids
being ordered by zoom), and a tile stored once for many positions (run lengths, deduplicated interiors of large
polygons) is decoded once.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from mapbox_vector_tile.Mapbox import vector_tile_pb2
from pmtiles.reader import MmapSource
from pmtiles.tile import Compression, deserialize_directory, deserialize_header, serialize_header

from cng_assets.transforms.columns import FID

DROPS_KEY = "cng:dropped_fids_at_max_zoom"  # archive metadata: features tippecanoe dropped to fit its tile limits
LISTED = 1000  # fids listed in check metadata (all of them go into the archive)
WEB_MERCATOR_LAT = 85.0511287798  # tiles stop here: a feature wholly nearer a pole cannot be in any tile


@dataclass
class TileCheck:
    passed: bool
    source_features: int  # rows of the GeoParquet with a geometry (null and empty ones have nothing to tile)
    found_at_max_zoom: int  # of those, features found in at least one max-zoom tile
    max_zoom: int
    tiles_at_max_zoom: int  # addressed, counting run lengths
    tiles_decoded: int  # distinct tile contents decoded
    declared_drops: int  # tippecanoe's own count of features dropped at max zoom to fit its tile limits
    missing: list[int] = field(default_factory=list)  # fids of the source absent from every max-zoom tile
    unknown: list[int] = field(default_factory=list)  # ids in tiles that the source has not
    beyond_web_mercator: list[int] = field(default_factory=list)  # wholly beyond WEB_MERCATOR_LAT: in no tile, listed

    def metadata(self) -> dict:
        d = asdict(self)
        for k in ("missing", "unknown", "beyond_web_mercator"):
            d[k] = d[k][:LISTED]
        return {"features_missing": len(self.missing), **d}


def source_fids(geoparquet: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Sorted fids of the rows that have a non-empty geometry within the tiles' latitudes, and of those wholly
    beyond them (by the bbox covering when there is one, else WKB)."""
    import shapely  # only for a GeoParquet without bbox column

    pf = pq.ParquetFile(geoparquet)
    geo = json.loads(pf.metadata.metadata[b"geo"])
    geom_col = geo["primary_column"]
    bbox_col = ((geo["columns"][geom_col].get("covering") or {}).get("bbox") or {}).get("xmin", [None])[0]
    tiled, beyond = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for batch in pf.iter_batches(columns=[FID, bbox_col or geom_col], batch_size=65_536):
        if bbox_col:
            ymin, ymax = (batch.column(1).field(k).to_numpy(zero_copy_only=False).astype(float) for k in ("ymin", "ymax"))
        else:
            _, ymin, _, ymax = shapely.bounds(shapely.from_wkb(batch.column(1).to_numpy(zero_copy_only=False))).T
        fids = np.asarray(batch.column(0).to_numpy(zero_copy_only=False))
        far = (ymin > WEB_MERCATOR_LAT) | (ymax < -WEB_MERCATOR_LAT)
        tiled.append(fids[~np.isnan(ymin) & ~far])
        beyond.append(fids[far])
    return np.sort(np.concatenate(tiled)), np.sort(np.concatenate(beyond))


def max_zoom_fids(archive: str | Path, layer: str) -> tuple[np.ndarray, int, int, int]:
    """Distinct feature ids in the layer of the max-zoom tiles; the max zoom, tiles addressed there, tiles decoded."""
    with open(archive, "rb") as f:
        get = MmapSource(f)
        h = deserialize_header(get(0, 127))
        z = h["max_zoom"]
        first = ((1 << 2 * z) - 1) // 3  # the first tile id of zoom z (ids run through zooms in order)
        last = ((1 << 2 * (z + 1)) - 1) // 3
        unzip = _decompressor(h["tile_compression"])
        addressed, seen_offsets, ids = 0, set(), []

        def walk(offset: int, length: int) -> None:
            nonlocal addressed
            entries = deserialize_directory(get(offset, length))
            for i, e in enumerate(entries):
                end = entries[i + 1].tile_id if i + 1 < len(entries) else None  # ids this entry may cover
                if e.run_length == 0:  # a leaf directory: skipped when all its tiles are of lower zooms
                    if (end is None or end > first) and e.tile_id < last:
                        walk(h["leaf_directory_offset"] + e.offset, e.length)
                    continue
                if e.tile_id + e.run_length <= first or e.tile_id >= last:
                    continue
                addressed += min(e.tile_id + e.run_length, last) - max(e.tile_id, first)
                if e.offset not in seen_offsets:
                    seen_offsets.add(e.offset)
                    ids.append(tile_ids(unzip(get(h["tile_data_offset"] + e.offset, e.length)), layer))

        walk(h["root_offset"], h["root_length"])
    found = np.unique(np.concatenate(ids)) if ids else np.empty(0, np.uint64)
    return found, z, addressed, len(seen_offsets)


def tile_ids(data: bytes, layer: str) -> np.ndarray:
    """The feature ids of one decoded (uncompressed) vector tile's layer."""
    tile = vector_tile_pb2.tile()
    tile.ParseFromString(data)
    for lyr in tile.layers:
        if lyr.name == layer:
            return np.fromiter((f.id for f in lyr.features if f.HasField("id")), np.uint64)
    return np.empty(0, np.uint64)


def check_archive(geoparquet: str | Path, archive: str | Path, layer: str, *, declared_drops: int = 0) -> TileCheck:
    """Every source feature in a max-zoom tile (those wholly beyond the tiles' latitudes listed apart). Passes
    when none is missing, or when every missing one is among
    the drops tippecanoe itself declared at the max zoom (its tile size and feature limits: unavoidable at that
    zoom, so they are listed, never silent); a loss tippecanoe did not declare, or an id the source lacks, fails."""
    fids, beyond = source_fids(geoparquet)
    found, z, addressed, decoded = max_zoom_fids(archive, layer)
    fids_u = fids.astype(np.uint64)
    missing = fids[~np.isin(fids_u, found)]
    unknown = found[~np.isin(found, fids_u)]
    passed = not len(unknown) and len(missing) <= declared_drops
    return TileCheck(passed, len(fids), len(fids) - len(missing), z, addressed, decoded, declared_drops,
                     missing.tolist(), unknown.tolist(), beyond.tolist())


def record_drops(archive: str | Path, fids: list[int]) -> None:
    """Add the dropped fids to the archive's JSON metadata (DROPS_KEY), rewriting the archive in place.

    Only the metadata section grows: leaf directories and tile data are copied as they are (their entries' offsets
    are relative to their sections), and the header's offsets move by the difference."""
    archive = Path(archive)
    tmp = archive.with_name(archive.name + ".drops")
    with open(archive, "rb") as src:
        get = MmapSource(src)
        h = deserialize_header(get(0, 127))
        rest = min(h["leaf_directory_offset"], h["tile_data_offset"])
        if not h["root_offset"] + h["root_length"] <= h["metadata_offset"] <= h["metadata_offset"] + h["metadata_length"] <= rest:
            raise ValueError(f"{archive}: sections not in the order root, metadata, leaves, tiles")
        meta = get(h["metadata_offset"], h["metadata_length"])
        gz = h["internal_compression"] == Compression.GZIP
        meta = json.loads(gzip.decompress(meta) if gz else meta)
        meta[DROPS_KEY] = sorted(int(f) for f in fids)
        new = json.dumps(meta, separators=(",", ":")).encode()
        new = gzip.compress(new) if gz else new
        shift = h["metadata_offset"] + len(new) - rest
        h2 = {**h, "metadata_length": len(new), "leaf_directory_offset": h["leaf_directory_offset"] + shift,
              "tile_data_offset": h["tile_data_offset"] + shift}
        with open(tmp, "wb") as out:
            out.write(serialize_header(h2))
            out.write(get(127, h["metadata_offset"] - 127))  # the root directory
            out.write(new)
            src.seek(rest)
            shutil.copyfileobj(src, out, 1 << 20)
    tmp.replace(archive)


def _decompressor(kind):
    if kind == Compression.GZIP:
        return gzip.decompress
    if kind in (Compression.NONE, Compression.UNKNOWN):
        return bytes
    raise ValueError(f"tile compression {kind} is not supported by the tile check")
