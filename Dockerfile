# syntax=docker/dockerfile:1
#
# One image with every claudeq binary in /usr/local/bin: api, worker,
# scheduler, claudeq (CLI) and claude-sim. Pick the role with the command:
#
#   docker build -t claudeq .
#   docker run --rm claudeq /usr/local/bin/worker
#
# The binaries are pure Go (CGO_ENABLED=0: FerretDB's SQLite backend used by
# `claudeq dev` is modernc.org/sqlite), so the final stage is distroless
# static: CA certificates and tzdata, no shell, user nonroot (65532).

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS TARGETARCH
# The commit --version prints: docker build --build-arg COMMIT=$(git rev-parse HEAD) .
ARG COMMIT=""
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-amd64} \
    go build -trimpath -ldflags="-s -w -X github.com/claudeq/claudeq/internal/app.commit=${COMMIT}" -o /out/ ./cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="claudeq" \
      org.opencontainers.image.description="Queue-driven gateway in front of the Claude API"
COPY --from=build /out/ /usr/local/bin/
WORKDIR /home/nonroot
USER 65532:65532
# api: 8080 (CLAUDEQ_HTTP_ADDR); every role: 9464 (CLAUDEQ_METRICS_ADDR).
EXPOSE 8080 9464
ENV CLAUDEQ_HTTP_ADDR=0.0.0.0:8080
CMD ["/usr/local/bin/api"]
