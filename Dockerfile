# syntax=docker/dockerfile:1
# Spoor's container image: one static-enough binary on distroless, running as a non-root user.
#
#   docker build -t spoor:dev .
#   docker run --rm -p 4317:4317 -p 4318:4318 -p 3200:3200 -v spoor-data:/var/lib/spoor spoor:dev
#
# The same image runs every role (`spoor serve --roles …`) and the agent (`spoor agent`);
# docs/deployment.md says how the Kubernetes manifests use it.

# ---- build ------------------------------------------------------------------------------------
FROM docker.io/library/rust:1.95.0-slim-bookworm AS builder
WORKDIR /src

# Dependencies first, in their own layer: a change to Spoor's sources rebuilds only Spoor's
# crates. Every member gets an empty target (and each declared bench a stub) so that cargo can
# load the workspace from the manifests alone.
COPY Cargo.toml Cargo.lock ./
COPY crates/model/Cargo.toml crates/model/
COPY crates/seal/Cargo.toml crates/seal/
COPY crates/wal/Cargo.toml crates/wal/
COPY crates/block/Cargo.toml crates/block/
COPY crates/store/Cargo.toml crates/store/
COPY crates/traceql/Cargo.toml crates/traceql/
COPY crates/query/Cargo.toml crates/query/
COPY crates/process/Cargo.toml crates/process/
COPY crates/generate/Cargo.toml crates/generate/
COPY crates/server/Cargo.toml crates/server/
COPY crates/agent/Cargo.toml crates/agent/
COPY crates/spoor/Cargo.toml crates/spoor/
RUN set -eu; \
    for crate in crates/*/; do \
        mkdir -p "${crate}src" "${crate}benches"; \
        touch "${crate}src/lib.rs"; \
        for bench in $(sed -n '/^\[\[bench\]\]/,/^name/s/^name = "\(.*\)"/\1/p' "${crate}Cargo.toml"); do \
            echo 'fn main() {}' > "${crate}benches/${bench}.rs"; \
        done; \
    done; \
    rm crates/spoor/src/lib.rs; \
    echo 'fn main() {}' > crates/spoor/src/main.rs; \
    cargo build --release --locked -p spoor

# Then the sources. COPY keeps the files' own times, which can be older than the stubs above:
# touching them makes cargo rebuild Spoor's crates for certain.
COPY crates crates
RUN set -eu; \
    find crates -name '*.rs' -exec touch {} +; \
    cargo build --release --locked -p spoor; \
    install -D -m 0755 target/release/spoor /out/usr/local/bin/spoor; \
    mkdir -p /out/var/lib/spoor

# ---- run --------------------------------------------------------------------------------------
# glibc and libgcc, CA certificates and nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/usr/local/bin/spoor /usr/local/bin/spoor
COPY --from=builder --chown=65532:65532 /out/var/lib/spoor /var/lib/spoor
# OTLP gRPC, OTLP HTTP, the API (/ready, /metrics, the UI).
EXPOSE 4317 4318 3200
VOLUME ["/var/lib/spoor"]
# The default data dir, ./data, is then on the volume.
WORKDIR /var/lib/spoor
# distroless's `nonroot` user, by number so that runAsNonRoot can check it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/spoor"]
# In a container the listeners face the pod's network, not loopback (the binary's default).
# Flags, not ENV: a SPOOR__* variable baked into the image would override every config file;
# a config file's listeners apply once the command is given (as the Kubernetes manifests do).
CMD ["serve", "--otlp-grpc-listen", "0.0.0.0:4317", "--otlp-http-listen", "0.0.0.0:4318", "--http-listen", "0.0.0.0:3200"]
