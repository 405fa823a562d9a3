# syntax=docker/dockerfile:1.7
# smsgw image: the proxy (`smsgw`) and the operator (`smsgw-operator`) in one
# small, non-root, distroless image.
#
#   docker build -t smsgw:dev .

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# No system protoc is needed (protox compiles the .proto files); ring needs
# a C compiler, which the rust image has.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p smsgw -p smsgw-operator \
 && mkdir -p /out \
 && cp target/release/smsgw target/release/smsgw-operator /out/

# SMPP simulator and gateway need no shell, no package manager: distroless
# "cc" carries glibc, libgcc and CA certificates; nonroot is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/smsgw /out/smsgw-operator /usr/local/bin/
USER 65532:65532
EXPOSE 8080 44044 50051
ENTRYPOINT []
CMD ["smsgw", "--help"]
