# sluice's container image: one static binary in an empty (scratch) image.
#
# From source (needs a registry for the Rust image):
#   docker build -t sluice .
# From a binary built on this host (no registry needed):
#   docker/build-runtime-image.sh target/release/sluice sluice:local
#   (copies the binary and, for a dynamically linked one, the libraries it needs into
#   docker/prebuilt/, then builds the `prebuilt` stage below.)
#
# The image runs `sluice run --config /etc/sluice/sluice.yaml`; configs/agent/compose.yaml and
# pipelines/ are its defaults, and compose mounts its own over them. Probe: `sluice healthcheck`.

# ---- prebuilt: the runtime image around a binary built on the host -------------------------
# First in the file so that `--target prebuilt` builds nothing else, with any builder.
FROM scratch AS prebuilt
COPY docker/prebuilt/ /
COPY configs/agent/compose.yaml /etc/sluice/sluice.yaml
COPY pipelines/ /etc/sluice/pipelines/
EXPOSE 9080 4317 4318
ENTRYPOINT ["/sluice"]
CMD ["run", "--config", "/etc/sluice/sluice.yaml"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s CMD ["/sluice", "healthcheck"]

# ---- build: a static musl binary --------------------------------------------------------------
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin sluice && strip target/release/sluice

# ---- runtime (the default target) -------------------------------------------------------------
FROM scratch AS runtime
COPY --from=build /src/target/release/sluice /sluice
COPY configs/agent/compose.yaml /etc/sluice/sluice.yaml
COPY pipelines/ /etc/sluice/pipelines/
EXPOSE 9080 4317 4318
ENTRYPOINT ["/sluice"]
CMD ["run", "--config", "/etc/sluice/sluice.yaml"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s CMD ["/sluice", "healthcheck"]
