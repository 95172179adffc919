# The one craftplane image: controller, and (later) the backup, restore and
# fetch-plugins Job/init-container entrypoints. A static musl binary on a
# distroless base, running as non-root.
#
# It cannot be built on the project's CI machines (no Docker engine there).
# Build it where Docker runs:
#   docker build -t ghcr.io/craftplane/craftplane:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin craftplane

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/craftplane /craftplane
USER 65532:65532
ENTRYPOINT ["/craftplane"]
CMD ["controller"]
