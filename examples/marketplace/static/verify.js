// POP Market's check of the chain, done in the browser: a page that does not trust popmarket
// repeats everything popmarket's Verifier does with libpopchain, from the raw fields of the
// answer and the replica set fixed at popmarket's start (GET /api/chain/trust-root):
//
//   the transaction's id          SHA-256("popchain/tx/v1" || its fields)      transaction.cpp
//   its place in the block        Merkle path to the header's tx root           merkle.cpp
//   each header's hash            SHA-256("popchain/block/v1" || its fields)    block.cpp
//   the chain to the checkpoint   prev_hash links, consecutive heights          pbft_certificate.cpp
//   the checkpoint certificate    quorum(n) ECDSA P-256 signatures, from distinct members,
//                                 over SHA-256("popchain/checkpoint/v1" || replica, seq,
//                                 block hash, state root)                       pbft_messages.cpp
//
// Integers are little-endian, hashes and keys raw bytes (codec.hpp). Signatures are 64 bytes
// r||s with low S (crypto.hpp), keys 33-byte compressed points: WebCrypto takes r||s as is,
// and the key is decompressed here, since Chromium imports only uncompressed raw keys.
//
// Plain script, no DOM: the page loads it before app.js, and the Node test
// (tests/marketplace/verify) evaluates it as it is.
'use strict';

// ---- bytes ---------------------------------------------------------------------------------
function hexBytes(hex) { return new Uint8Array((hex.match(/../g) || []).map((b) => parseInt(b, 16))); }
function bytesHex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(''); }
function cat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)); }

class VerifyError extends Error {
  constructor(kind, message) { super(message); this.kind = kind; }
}
function refuse(kind, message) { throw new VerifyError(kind, message); }

// Exactly `len` bytes from lower- or upper-case hex, or a refusal.
function fixedHex(hex, len, what) {
  if (typeof hex !== 'string' || hex.length !== 2 * len || !/^[0-9a-fA-F]*$/.test(hex)) refuse('malformed', `${what}: not ${len} bytes of hex`);
  return hexBytes(hex);
}
function anyHex(hex, what) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) refuse('malformed', `${what}: not hex`);
  return hexBytes(hex);
}
function uint(v, bits, what) {
  // JSON numbers above 2^53 are not exact in JavaScript: refused rather than rounded.
  if (!Number.isSafeInteger(v) || v < 0 || (bits === 32 && v > 0xffffffff)) refuse('malformed', `${what}: not a ${bits}-bit unsigned integer`);
  const out = new Uint8Array(bits / 8);
  let x = BigInt(v);
  for (let i = 0; i < out.length; ++i) { out[i] = Number(x & 0xffn); x >>= 8n; }
  return out;
}
const ascii = (s) => new TextEncoder().encode(s);

// ---- the chain's encodings -----------------------------------------------------------------
const TX_KINDS = { transfer: 1, mint: 2, escrow_open: 3, escrow_release: 4, escrow_refund: 5, config: 6 };

// "pop" + 20 address bytes + 4 checksum bytes (the first 4 of SHA-256("popchain-address" ||
// address)), in hex. The checksum is checked, so the text shown is the address hashed.
async function addressBytes(text) {
  if (typeof text !== 'string' || !/^pop[0-9a-fA-F]{48}$/.test(text)) refuse('malformed', `not an address: ${text}`);
  const raw = hexBytes(text.slice(3, 43));
  const sum = (await sha256(cat(ascii('popchain-address'), raw))).slice(0, 4);
  if (bytesHex(sum) !== text.slice(43).toLowerCase()) refuse('malformed', `address checksum: ${text}`);
  return raw;
}

// Tx::id(): SHA-256 over the domain and the unsigned fields (the signature is not covered).
async function txId(tx) {
  const kind = TX_KINDS[tx && tx.kind];
  if (!kind) refuse('malformed', 'unknown transaction kind');
  const chain = ascii(String(tx.chain_id));
  const payload = anyHex(tx.payload, 'payload');
  return bytesHex(await sha256(cat(ascii('popchain/tx/v1'), [kind], uint(chain.length, 32, 'chain id length'), chain,
    await addressBytes(tx.from), await addressBytes(tx.to), uint(tx.amount, 64, 'amount'), uint(tx.nonce, 64, 'nonce'),
    fixedHex(tx.trade_id, 32, 'trade id'), uint(tx.deadline, 64, 'deadline'), uint(payload.length, 32, 'payload length'), payload,
    fixedHex(tx.public_key, 33, 'public key'))));
}

// BlockHeader::hash(). The `hash` field of the answer is never used.
async function headerHash(h) {
  if (!h) refuse('malformed', 'no header');
  return bytesHex(await sha256(cat(ascii('popchain/block/v1'), uint(h.height, 64, 'height'), fixedHex(h.prev_hash, 32, 'prev_hash'),
    fixedHex(h.tx_root, 32, 'tx_root'), fixedHex(h.state_root, 32, 'state_root'), uint(h.view, 64, 'view'),
    uint(h.proposer, 32, 'proposer'), uint(h.timestamp_ms, 64, 'timestamp_ms'))));
}

// What a replica signs for a checkpoint: WebCrypto hashes these bytes with SHA-256, which
// gives Checkpoint::signed_digest(), the digest the replica's ECDSA signature is over.
function checkpointSignedBytes(cp) {
  return cat(ascii('popchain/checkpoint/v1'), uint(cp.replica, 32, 'replica'), uint(cp.seq, 64, 'seq'),
    fixedHex(cp.block_hash, 32, 'block_hash'), fixedHex(cp.state_root, 32, 'state_root'));
}

// ---- Merkle proofs (merkle.hpp) ------------------------------------------------------------
// leaf = H(00 || id), node = H(01 || left || right), an odd node moves up, root = H(02 || u32
// count || top).
async function merkleVerify(rootHex, leafHex, proof) {
  if (!proof || !proof.leaf_count || proof.index >= proof.leaf_count) return false;
  let acc = await sha256(cat([0], hexBytes(leafHex)));
  let pos = proof.index;
  let width = proof.leaf_count;
  let used = 0;
  while (width > 1) {
    if ((pos ^ 1) < width) {
      if (used === proof.siblings.length) return false;
      const s = hexBytes(proof.siblings[used++]);
      acc = await sha256((pos & 1) ? cat([1], s, acc) : cat([1], acc, s));
    }
    pos = Math.floor(pos / 2);
    width = Math.floor((width + 1) / 2);
  }
  if (used !== proof.siblings.length) return false;
  const count = new Uint8Array(4);
  new DataView(count.buffer).setUint32(0, proof.leaf_count, true);
  return bytesHex(await sha256(cat([2], count, acc))) === String(rootHex).toLowerCase();
}
// merkle_root(): all zero for no leaves.
async function merkleRoot(leafHexes) {
  if (leafHexes.length === 0) return '00'.repeat(32);
  let level = await Promise.all(leafHexes.map((id) => sha256(cat([0], hexBytes(id)))));
  while (level.length > 1) {
    const next = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? await sha256(cat([1], level[i], level[i + 1])) : level[i]);
    level = next;
  }
  const count = new Uint8Array(4);
  new DataView(count.buffer).setUint32(0, leafHexes.length, true);
  return bytesHex(await sha256(cat([2], count, level[0])));
}

// ---- P-256 ---------------------------------------------------------------------------------
const P256 = {
  p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
  b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
  n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
};
function modPow(base, exp, m) {
  let result = 1n;
  base %= m;
  while (exp > 0n) {
    if (exp & 1n) result = (result * base) % m;
    base = (base * base) % m;
    exp >>= 1n;
  }
  return result;
}
function bigFromBytes(bytes) { return bytes.reduce((acc, b) => (acc << 8n) | BigInt(b), 0n); }
function bytesFromBig(v, len) {
  const out = new Uint8Array(len);
  for (let i = len - 1; i >= 0; --i) { out[i] = Number(v & 0xffn); v >>= 8n; }
  return out;
}
// A 33-byte compressed SEC1 point (02/03 || x) as the 65-byte uncompressed one (04 || x || y):
// y^2 = x^3 - 3x + b (mod p), and since p = 3 (mod 4) a square root of a is a^((p+1)/4).
// Null when x is not a coordinate of a point on the curve.
function decompressP256(compressed) {
  if (compressed.length !== 33 || (compressed[0] !== 2 && compressed[0] !== 3)) return null;
  const { p, b } = P256;
  const x = bigFromBytes(compressed.subarray(1));
  if (x >= p) return null;
  const rhs = (((x * x) % p) * x - 3n * x + b) % p;
  const a = (rhs + p) % p;
  let y = modPow(a, (p + 1n) / 4n, p);
  if ((y * y) % p !== a) return null;
  if ((y & 1n) !== BigInt(compressed[0] & 1)) y = p - y;
  return cat([4], bytesFromBig(x, 32), bytesFromBig(y, 32));
}
const importedKeys = new Map();
async function importReplicaKey(hex) {
  if (!importedKeys.has(hex)) {
    importedKeys.set(hex, (async () => {
      const raw = decompressP256(fixedHex(hex, 33, 'replica key'));
      if (!raw) return null;
      try {
        return await crypto.subtle.importKey('raw', raw, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
      } catch (e) { return null; }
    })());
  }
  return importedKeys.get(hex);
}
// verify() of crypto.hpp: r and s in [1, n-1], s at most n/2 (the low-S form), and a valid
// ECDSA signature over SHA-256(message).
async function verifySignature(keyHex, sigHex, message) {
  const sig = fixedHex(sigHex, 64, 'signature');
  const r = bigFromBytes(sig.subarray(0, 32));
  const s = bigFromBytes(sig.subarray(32));
  const { n } = P256;
  if (r === 0n || s === 0n || r >= n || s > (n - 1n) / 2n) return false;
  const key = await importReplicaKey(keyHex);
  if (!key) return false;
  return crypto.subtle.verify({ name: 'ECDSA', hash: { name: 'SHA-256' } }, key, sig, message);
}

// ---- pBFT (pbft/config.hpp, pbft_certificate.cpp) ------------------------------------------
function maxFaulty(n) { return n === 0 ? 0 : Math.floor((n - 1) / 3); }
function quorum(n) { return Math.floor((n + maxFaulty(n) + 2) / 2); }

// verify_checkpoint_certificate(): matching checkpoints from distinct members, every one
// validly signed, at least quorum(n) of them.
async function verifyCertificate(certificate, replicas) {
  const cps = certificate && Array.isArray(certificate.checkpoints) ? certificate.checkpoints : [];
  if (cps.length === 0) refuse('certificate', 'empty checkpoint certificate');
  const first = cps[0];
  const seen = new Set();
  for (const c of cps) {
    if (c.seq !== first.seq || String(c.block_hash).toLowerCase() !== String(first.block_hash).toLowerCase() ||
        String(c.state_root).toLowerCase() !== String(first.state_root).toLowerCase())
      refuse('certificate', `checkpoint of replica ${c.replica} does not match the others`);
    if (seen.has(c.replica)) refuse('certificate', `replica ${c.replica} appears twice`);
    seen.add(c.replica);
    const member = replicas.find((r) => r.id === c.replica);
    if (!member) refuse('membership', `replica ${c.replica} is not a member of the trusted set`);
    if (!await verifySignature(member.public_key, c.signature, checkpointSignedBytes(c)))
      refuse('certificate', `checkpoint signature of replica ${c.replica}`);
  }
  if (cps.length < quorum(replicas.length))
    refuse('membership', `${cps.length} checkpoints, a quorum of ${replicas.length} is ${quorum(replicas.length)}`);
  return first;
}

// verify_block() without the transaction list: the headers chain from `header` up to the
// checkpoint block, and the certificate certifies that block under `replicas`.
async function verifyHeaderChain(header, commitProof, replicas) {
  if (!commitProof || !Array.isArray(commitProof.headers)) refuse('uncertified', 'no commit proof');
  let parent = await headerHash(header);
  let height = header.height;
  for (const h of commitProof.headers) {
    if (h.height !== height + 1) refuse('chain', `proof header at height ${h.height} follows ${height}`);
    if (String(h.prev_hash).toLowerCase() !== parent) refuse('chain', `proof header ${h.height} does not chain`);
    parent = await headerHash(h);
    height = h.height;
  }
  const cp = await verifyCertificate(commitProof.certificate, replicas);
  if (cp.seq !== height || String(cp.block_hash).toLowerCase() !== parent)
    refuse('chain', `the certificate is for height ${cp.seq}, the headers end at ${height}`);
  return { hash: await headerHash(header), checkpoint: cp.seq };
}

function trustedSet(trustRoot) {
  const replicas = trustRoot && Array.isArray(trustRoot.replicas) ? trustRoot.replicas : [];
  if (replicas.length === 0) refuse('membership', 'no trusted replica set');
  return replicas;
}

// Runs one whole check; its result as the page shows it: {ok, kind, reason, blockHash,
// checkpoint}, with a refusal's kind and reason when it fails.
async function settle(check) {
  try {
    const block = await check();
    return { ok: true, kind: 'verified', reason: '', blockHash: block.hash, checkpoint: block.checkpoint };
  } catch (e) {
    if (e instanceof VerifyError) return { ok: false, kind: e.kind, reason: e.message };
    return { ok: false, kind: 'malformed', reason: String(e && e.message || e) };
  }
}

// The whole check of one transaction answer (check_json() in popmarket): its id from its
// fields, its Merkle path to its block's tx root, the block's headers up to a checkpoint and
// that checkpoint's certificate under the trusted set. {ok, kind, reason}; kind says what
// failed: 'uncertified', 'malformed', 'merkle', 'chain', 'certificate', 'membership'.
async function verifyTxAnswer(check, trustRoot) {
  return settle(async () => {
    const replicas = trustedSet(trustRoot);
    if (!check || !check.found || !check.tx) refuse('uncertified', 'not committed');
    if (!check.header || !check.commit_proof) refuse('uncertified', 'no commit proof yet');
    const id = await txId(check.tx);
    if (id !== String(check.txid).toLowerCase()) refuse('malformed', 'the transaction\'s fields do not hash to its id');
    if (check.header.height !== check.height) refuse('malformed', 'the header is not the transaction\'s block');
    if (!check.merkle_proof || check.merkle_proof.index !== check.index) refuse('malformed', 'the position shown is not the proof\'s');
    if (!await merkleVerify(check.header.tx_root, id, check.merkle_proof)) refuse('merkle', 'the Merkle proof does not lead to the block\'s tx root');
    const block = await verifyHeaderChain(check.header, check.commit_proof, replicas);
    return block;
  });
}

// A block answer (GET /api/chain/blocks/{h}): its transactions against its tx root, and its
// header, chain and certificate as above.
async function verifyBlockAnswer(answer, trustRoot) {
  return settle(async () => {
    const replicas = trustedSet(trustRoot);
    const b = answer && answer.block;
    if (!b || !b.header) refuse('malformed', 'no block');
    if (!answer.commit_proof) refuse('uncertified', 'no commit proof yet');
    const ids = [];
    for (const tx of b.txs || []) {
      const id = await txId(tx);
      if (String(tx.id).toLowerCase() !== id) refuse('malformed', 'a transaction\'s id shown is not its fields\' hash');
      ids.push(id);
    }
    if (await merkleRoot(ids) !== String(b.header.tx_root).toLowerCase()) refuse('merkle', 'the block\'s transactions do not match its tx root');
    const block = await verifyHeaderChain(b.header, answer.commit_proof, replicas);
    if (block.hash !== String(b.hash).toLowerCase()) refuse('malformed', 'the hash shown is not the header\'s');
    return block;
  });
}

// A block of a list (GET /api/chain/blocks): its header, chain and certificate, and the hash
// and height shown are the header's.
async function verifyHeaderAnswer(entry, trustRoot) {
  return settle(async () => {
    const replicas = trustedSet(trustRoot);
    if (!entry || !entry.header) refuse('uncertified', 'no header');
    if (!entry.commit_proof) refuse('uncertified', 'no commit proof yet');
    const block = await verifyHeaderChain(entry.header, entry.commit_proof, replicas);
    if (block.hash !== String(entry.hash).toLowerCase() || entry.height !== entry.header.height) refuse('malformed', 'the hash or height shown is not the header\'s');
    return block;
  });
}

// What a user compares to pin the trusted set: SHA-256("popchain/replica-set/v1" || u32
// count || per replica, in the genesis file's order, u32 id || 33-byte key), in hex. The
// same as `popmarket --print-trust-root` prints from the genesis file.
async function replicaSetFingerprint(replicas) {
  const parts = [ascii('popchain/replica-set/v1'), uint(replicas.length, 32, 'count')];
  for (const r of replicas) parts.push(uint(r.id, 32, 'id'), fixedHex(r.public_key, 33, 'key'));
  return bytesHex(await sha256(cat(...parts)));
}

const PopVerify = {
  hexBytes, bytesHex, sha256, txId, headerHash, checkpointSignedBytes, merkleVerify, merkleRoot, decompressP256,
  verifySignature, quorum, maxFaulty, verifyCertificate, verifyHeaderChain, verifyTxAnswer, verifyBlockAnswer, verifyHeaderAnswer,
  replicaSetFingerprint, addressBytes,
};
if (typeof globalThis !== 'undefined') globalThis.PopVerify = PopVerify;
