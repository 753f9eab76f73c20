# The runner image: one image, every pipeline (`runner start <pipeline>` as the command).
# Built from the sources; the TypeScript is bundled once at build time (bin/runner.mjs).
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY runner.ts topics.yaml ./
COPY bin ./bin
COPY core ./core
COPY operators ./operators
COPY simulator ./simulator
COPY pipelines ./pipelines
COPY schemas ./schemas
COPY migrations ./migrations
COPY dashboard ./dashboard
# Bundle now, so a container starts without writing into the image.
RUN node bin/runner.mjs list > /dev/null
USER node
EXPOSE 4195
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.RUNNER_HTTP_PORT||4195)+'/health/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# A heap limit: without one V8 sizes its heap for the machine (GBs) and lets garbage pile up; with
# it a bridge at full speed stays at ~160 MB resident instead of ~290 MB (docs/benchmarks.md, MQTT ->
# Kafka bridge, session 5). Messages in flight are bounded by each pipeline's max_in_flight, so the
# live heap is far below this limit; raise it by overriding the entrypoint (a flag on the command
# line wins over NODE_OPTIONS).
ENTRYPOINT ["node", "--max-old-space-size=512", "bin/runner.mjs"]
CMD ["--help"]
