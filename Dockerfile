# estatemon: one image, one binary; the compose file runs it as ingest,
# analytics and api. Built from the workspace with the crates.io registry.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin estatemon

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates fonts-wqy-microhei && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/estatemon /usr/local/bin/estatemon
COPY --from=build /src/simulators/sites /usr/share/estatemon/sites
USER nobody
ENTRYPOINT ["/usr/local/bin/estatemon"]
