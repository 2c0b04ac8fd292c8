# syntax=docker/dockerfile:1

# Build stage: the official Rust image at a pinned version. Dependencies are built in a
# layer of their own (from Cargo.toml and Cargo.lock only), so editing src/ rebuilds just
# the crate.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The image builds the library and the binary only. Dev-only targets ([[bench]], [[example]],
# [[test]]) are dropped from the manifest this layer sees, so the cached dependency layer
# needs only Cargo.toml and Cargo.lock, and a new dev-only target can never break the image
# (one did: issue 18).
RUN awk '/^\[\[(bench|example|test)\]\]/ { skip = 1; next } /^\[/ { skip = 0 } !skip' \
        Cargo.toml > Cargo.image.toml \
    && mv Cargo.image.toml Cargo.toml \
    && mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/tcpie-* target/release/deps/tcpie-* target/release/deps/libtcpie-*
COPY src ./src
RUN cargo build --release --locked && strip target/release/tcpie

# Runtime stage: distroless (glibc, CA certificates, no shell), non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="tcpie" \
      org.opencontainers.image.description="An admission-controlled TCP server: token-bucket rate limiting, a bounded queue and a fixed worker pool" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/tcpie"
COPY --from=build /src/target/release/tcpie /usr/local/bin/tcpie
# 65532 is distroless's "nonroot" user; numeric so the host can check it is not root.
USER 65532:65532
# 8080: the admission-controlled TCP port; 9090: metrics and probes.
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/tcpie", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/tcpie"]
