# The cutover image: `docker build -t cutover:0.1.0 .` (helm/cutover runs it as user 10001
# with a read-only root filesystem; the config is mounted at /etc/cutover/cutover.yaml).

# Build the wheels: cutover's own and its dependencies'. Pure Python by default;
# `--build-arg CUTOVER_COMPILE=1` installs a C compiler here and compiles the fast path's hot
# modules (setup.py, Cython). `cutover version` in the image says which build it holds.
FROM python:3.11-slim AS build
ARG CUTOVER_COMPILE=0
ENV CUTOVER_COMPILE=${CUTOVER_COMPILE}
RUN if [ "$CUTOVER_COMPILE" = 1 ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends gcc libc6-dev \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY cutover/ cutover/
COPY core/ core/
COPY routing/ routing/
COPY compat/ compat/
COPY alerts/ alerts/
COPY canary/ canary/
COPY proxy/ proxy/
COPY publishing/ publishing/
COPY parity/ parity/
COPY bench/ bench/
COPY examples/ examples/
COPY nginx/ nginx/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Run: the wheels installed into a clean slim image, nothing else.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 cutover \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/cutover \
      --shell /usr/sbin/nologin cutover \
 && mkdir -p /etc/cutover /var/lib/cutover \
 && chown 10001:10001 /var/lib/cutover
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels cutover
RUN cutover version  # the build log's last word: compiled or pure
WORKDIR /var/lib/cutover
USER 10001:10001
EXPOSE 8080
CMD ["cutover", "serve", "-c", "/etc/cutover/cutover.yaml"]
