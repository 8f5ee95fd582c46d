// Loaded before the app (`node --require ./instrumentation.js app.js`), so the instrumentations
// patch http and express before the app requires them. Everything else comes from OTEL_*
// variables: OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER (README.md).
'use strict';

const { NodeSDK } = require('@opentelemetry/sdk-node');
const { getNodeAutoInstrumentations } = require('@opentelemetry/auto-instrumentations-node');

const sdk = new NodeSDK({
  instrumentations: [
    getNodeAutoInstrumentations({
      // File-system spans would bury the request's own spans; off (as the package's default).
      '@opentelemetry/instrumentation-fs': { enabled: false },
    }),
  ],
});
sdk.start();

// Spans still in the batch go out before the process exits (docker stop, Kubernetes).
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    sdk.shutdown().finally(() => process.exit(0));
  });
}
