# syntax=docker/dockerfile:1
# cc-heartbeat container image: a release build, on a distroless runtime (glibc and OpenSSL,
# no shell, no package manager), running as a non-root user.
#
#   docker build -t cc-heartbeat .
#   docker run --rm -v $PWD/my-config.yaml:/etc/cc-heartbeat/config.yaml:ro cc-heartbeat
#
# For amd64 and arm64 at once (BuildKit, with QEMU for the other architecture; a native
# builder per architecture is much faster):
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VCS_REVISION=$(git rev-parse HEAD) -t registry.example.com/cc-heartbeat:TAG --push .

FROM rust:1.95-slim-bookworm AS build
# librdkafka is built from source (third_party/, with this project's fix): a C toolchain,
# pkg-config and the OpenSSL headers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The commit built, for cc_heartbeat.build.info (the build context has no .git):
#   docker build --build-arg VCS_REVISION=$(git rev-parse HEAD) -t cc-heartbeat .
ARG VCS_REVISION=unknown
ENV CC_HEARTBEAT_VCS_REVISION=$VCS_REVISION
COPY Cargo.toml Cargo.lock build.rs ./
COPY third_party ./third_party
COPY src ./src
# Cargo's registry and the target directory persist between builds (BuildKit cache mounts):
# a change to the agent's source rebuilds the agent, not librdkafka and the dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -m 0755 target/release/cc-heartbeat /cc-heartbeat

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VCS_REVISION=unknown
# Cargo.toml's version (tests/deploy.rs keeps them in step).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cc-heartbeat" \
      org.opencontainers.image.description="Kafka heartbeat monitor: broker reachability stage by stage, heartbeats through every partition, the commit path; exports over OTLP" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.revision=$VCS_REVISION \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /cc-heartbeat /usr/local/bin/cc-heartbeat
# Mount the config here, or point CC_HEARTBEAT_CONFIG elsewhere; secrets come from the
# environment (${VAR} in the config) or mounted files (password_file).
ENV CC_HEARTBEAT_CONFIG=/etc/cc-heartbeat/config.yaml
EXPOSE 8080
USER nonroot:nonroot
# The image has no shell or curl: the agent asks its own /healthz (at the config's
# http.listen) and exits 0 or 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/cc-heartbeat", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/cc-heartbeat"]
CMD ["run"]
