// express-session serving the benchmark routes: node server.js --mode memory|redis --port N --redis URL
'use strict';
const express = require('express');
const session = require('express-session');

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};

async function main() {
  const mode = arg('mode', 'memory');
  const port = Number(arg('port', '8080'));
  let store;
  if (mode === 'redis') {
    const { createClient } = require('redis');
    const { RedisStore } = require('connect-redis');
    const client = createClient({ url: arg('redis', 'redis://127.0.0.1:6379') });
    await client.connect();
    store = new RedisStore({ client, prefix: `bench${process.pid}:` });
  } else {
    store = new session.MemoryStore();
  }
  const app = express();
  app.use(session({ store, secret: 'benchmark secret', resave: false, saveUninitialized: false }));
  app.get('/read', (req, res) => res.send(String(req.session.n ?? -1)));
  app.get('/write', (req, res) => {
    req.session.n = (req.session.n ?? 0) + 1;
    res.send(String(req.session.n));
  });
  app.get('/new', (req, res) => {
    req.session.n = 0;
    res.send('0');
  });
  app.listen(port, '127.0.0.1', () => console.log(`ready express-${mode} on 127.0.0.1:${port}`));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
