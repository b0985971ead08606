# The natter binary in a small image; compose.yaml runs it once per service.
FROM rust:1.95-slim AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p natter

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/natter natter && mkdir -p /var/lib/natter && chown natter /var/lib/natter
COPY --from=build /src/target/release/natter /usr/local/bin/natter
USER natter
WORKDIR /var/lib/natter
ENV NATTER_DATA_DIR=/var/lib/natter
ENTRYPOINT ["natter"]
CMD ["run"]
