// A minimal broadcast hub on Node's `ws` (the most used Node WebSocket
// server), as a peer for `roomcast-load --proto raw`: every text message a
// client sends goes to every other client on the same path (room).
// Usage: node ws-broadcast.js PORT   (needs `npm install ws@8` beside it)
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9400);
const rooms = new Map(); // path -> Set of sockets
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, maxPayload: 32 * 1024 });

wss.on('connection', (ws, req) => {
  const room = req.url.split('?')[0];
  if (!rooms.has(room)) rooms.set(room, new Set());
  const members = rooms.get(room);
  members.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const other of members) {
      if (other !== ws && other.readyState === 1) other.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
  });
});
wss.on('listening', () => console.log(`listening on 127.0.0.1:${port}`));
