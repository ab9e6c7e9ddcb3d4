# syntax=docker/dockerfile:1
# One image, both binaries: sluice-broker (the broker pods) and sluice-operator (the operator
# Deployment). Build from the repository root:
#   docker build -t <registry>/sluice:0.1.0 .
# Runs as the unprivileged user 65532 on a distroless runtime (glibc, CA certificates, no shell).

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Symbols stay (readable backtraces); DWARF debug info, which the workspace's release profile
# keeps for profiling, does not need to ship.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
# The cargo registry and target/ live in BuildKit cache mounts, so a rebuild recompiles only what
# changed; the binaries are copied out within the same step because the mounts are not part of
# the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-broker -p sluice-operator \
    && install -D -m 0755 target/release/sluice-broker /out/usr/local/bin/sluice-broker \
    && install -D -m 0755 target/release/sluice-operator /out/usr/local/bin/sluice-operator \
    && install -d -m 0755 /out/data/sluice/data

FROM gcr.io/distroless/cc-debian12:nonroot
# Binaries owned by root (the runtime user cannot change them); the data directory owned by it.
COPY --from=builder /out/usr/local/bin/ /usr/local/bin/
COPY --from=builder --chown=65532:65532 /out/data/sluice/ /var/lib/sluice/
USER 65532:65532
# 9092 Kafka, 9644 broker HTTP side port, 8080 operator HTTP side port.
EXPOSE 9092 9644 8080
# No ENTRYPOINT: Kubernetes sets the command (sluice-broker or sluice-operator). The default is a
# standalone broker for `docker run -p 9092:9092 <image>`, data under /var/lib/sluice (mount a
# volume there to keep it). Defaults go in arguments, not ENV: SLUICE_* variables would override
# the configuration file the operator gives the broker pods.
CMD ["sluice-broker", "--listener", "0.0.0.0:9092", "--advertised-listener", "localhost:9092", \
     "--http-listener", "0.0.0.0:9644", "--data-dir", "/var/lib/sluice/data"]
