# hubd in a container: a static binary (CGO_ENABLED=0, -trimpath) on an
# empty image, run as a non-root user. No HEALTHCHECK on purpose: the
# orchestrator probes GET /readyz (readiness) and GET /healthz (liveness),
# see deploy/kubernetes/ and docs/OPERATIONS.md.
#
#   docker build -t hubd .          # or: podman build -t hubd .
#   docker run -p 8080:8080 -e HUB_JWT_SECRET=... hubd
#
# From a binary built outside (what .ci/run does): put hubd and a CA
# bundle in a folder and build the runtime-prebuilt stage from it:
#
#   CGO_ENABLED=0 go build -trimpath -o ctx/hubd ./cmd/hubd
#   cp /etc/ssl/certs/ca-certificates.crt ctx/
#   podman build -f Dockerfile --target runtime-prebuilt -t hubd ctx
#
# Not tested by the project's CI: the build stage. Its base image
# (golang:1.26-bookworm) comes from a container registry, and the machines
# the project is built and tested on reach none, so CI builds only the
# runtime-prebuilt stage (FROM scratch needs no registry) from a binary it
# built itself. The two runtime stages below must stay identical but for
# where their files come from (deploy_test.go checks it).

# ---- build: the static binary, from source -------------------------------
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# -buildvcs=auto stamps the commit when the context holds the .git folder
# (hubd --version shows it); -s -w drop the symbol tables.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=auto -ldflags="-s -w" -o /rootfs/hubd ./cmd/hubd \
 && mkdir -p /rootfs/etc/ssl/certs \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt

# ---- runtime-prebuilt: the same image from a binary built outside --------
FROM scratch AS runtime-prebuilt
COPY hubd /hubd
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# the CA bundle is for rediss:// and https JWKS/upstream URLs
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/hubd"]
LABEL org.opencontainers.image.title="hubd" \
      org.opencontainers.image.description="hub: a real-time push server (WebSocket, SSE, broadcast API)" \
      org.opencontainers.image.licenses="Apache-2.0"

# ---- runtime (default target): from the build stage ----------------------
FROM scratch AS runtime
COPY --from=build /rootfs/hubd /hubd
COPY --from=build /rootfs/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# the CA bundle is for rediss:// and https JWKS/upstream URLs
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/hubd"]
LABEL org.opencontainers.image.title="hubd" \
      org.opencontainers.image.description="hub: a real-time push server (WebSocket, SSE, broadcast API)" \
      org.opencontainers.image.licenses="Apache-2.0"
