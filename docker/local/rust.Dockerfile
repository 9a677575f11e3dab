# A local stand-in for the public `rust:1-bookworm` image, for machines that
# cannot pull from Docker Hub (scripts/docker-base-images builds it; see
# docker/README.md). It is what `rust:1-bookworm` is to docker/Dockerfile:
# Debian bookworm, gcc and libc6-dev for linking and the C parts of
# dependencies, ca-certificates, and a Rust toolchain with cargo at
# /usr/local/cargo/bin, CARGO_HOME=/usr/local/cargo. The toolchain is the
# host's own (copied into the build context by the script), so nothing is
# downloaded but Debian packages.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Extra certificate authorities of the host (/usr/local/share/ca-certificates,
# e.g. an egress proxy's): cargo inside the build reaches crates.io the way
# the host does. Empty on most machines.
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain/ /usr/local/rustup/toolchains/host/
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin \
    && for tool in /usr/local/rustup/toolchains/host/bin/*; do ln -s "$tool" /usr/local/cargo/bin/; done \
    && cargo --version && rustc --version
