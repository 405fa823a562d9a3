// Node-RED 4 settings of the smsgw Message Control Platform.
//
// Environment:
//   MCP_PORT / PORT      listen port (default 1880)
//   MCP_HOST             listen address (default 0.0.0.0)
//   MCP_USER_DIR         Node-RED user directory (default ./.node-red)
//   MCP_TOKEN            bearer token every check must carry (required)
//   MCP_REDIS_URL        redis://host:port/db (default redis://127.0.0.1:6379)
//   MCP_REDIS_PREFIX     key prefix shared with the gateway (default smsgw)
//   MCP_TIME_ZONE        IANA zone of the calendar days and weeks (default UTC)
//   MCP_STRATEGIES       JSON object overriding/adding strategies, e.g.
//                        {"cp1":{"daily":2,"weekly":5,"blacklists":["default"]}}
//   MCP_EDITOR           "1" to serve the flow editor and admin API (off by default)
const path = require('path');
const crypto = require('crypto');
const { createClient } = require('redis');

const redis = createClient({
  url: process.env.MCP_REDIS_URL || 'redis://127.0.0.1:6379',
  // Fail a command at once while disconnected instead of queueing it: the
  // gateway's timeout and fail mode decide what happens then.
  disableOfflineQueue: true,
  socket: { connectTimeout: 2000, reconnectStrategy: (n) => Math.min(50 * 2 ** n, 2000) },
});
let lastRedisError = 0;
redis.on('error', (e) => {
  const now = Date.now();
  if (now - lastRedisError > 10000) {
    lastRedisError = now;
    console.error(`[mcp] redis: ${e.message}`);
  }
});
redis.connect().catch(() => {});

const editor = process.env.MCP_EDITOR === '1';

module.exports = {
  uiPort: parseInt(process.env.MCP_PORT || process.env.PORT || '1880', 10),
  uiHost: process.env.MCP_HOST || '0.0.0.0',
  userDir: process.env.MCP_USER_DIR || path.join(__dirname, '.node-red'),
  flowFile: path.join(__dirname, 'flows.json'),
  flowFilePretty: true,
  credentialSecret: false,
  // The editor and admin API are off unless asked for: this instance
  // serves the check, health and metrics endpoints only.
  httpAdminRoot: editor ? '/admin' : false,
  httpNodeRoot: '/',
  apiMaxLength: '64kb',
  functionExternalModules: false,
  functionGlobalContext: { redis, crypto },
  diagnostics: { enabled: false },
  runtimeState: { enabled: false },
  telemetry: { enabled: false },
  logging: { console: { level: 'info', metrics: false, audit: false } },
  editorTheme: { projects: { enabled: false }, tours: false },
};
