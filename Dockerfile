# performchat: a two-stage build. `docker build -t performchat .`
# `docker run -p 8080:8080 -v performchat:/data performchat` (first start prints a key pair).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin performchat

FROM debian:bookworm-slim
RUN useradd --system --home /data performchat && mkdir /data && chown performchat /data
COPY --from=build /src/target/release/performchat /usr/local/bin/performchat
USER performchat
WORKDIR /data
ENV PERFORMCHAT_DATABASE_URL=sqlite:///data/performchat.db \
    PERFORMCHAT_LISTEN=0.0.0.0:8080 \
    PERFORMCHAT_LOG_FORMAT=json
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["performchat"]
CMD ["serve"]
