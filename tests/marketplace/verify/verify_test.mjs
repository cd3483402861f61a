// The web page's own check of the chain (examples/marketplace/static/verify.js), run in Node
// against a certified transaction the C++ code produced (popmarket_verify_fixture): the real
// answer must pass, and every alteration of it must fail.
//   node verify_test.mjs --script PATH/verify.js --fixture FIXTURE.json
import fs from 'node:fs';
import vm from 'node:vm';

const opts = {};
for (let i = 2; i < process.argv.length; i += 2) opts[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const k of ['script', 'fixture']) if (!opts[k]) throw new Error(`--${k} is required`);
// WebCrypto is a global from Node 19 on; Debian 12's Node 18 has it in node:crypto only.
if (!globalThis.crypto || !globalThis.crypto.subtle) {
  const { webcrypto } = await import('node:crypto');
  if (!webcrypto || !webcrypto.subtle) throw new Error(`no WebCrypto in Node ${process.version}`);
  Object.defineProperty(globalThis, 'crypto', { value: webcrypto, configurable: true });
}

// Evaluated as the page evaluates it: a plain script, its functions become globals.
vm.runInThisContext(fs.readFileSync(opts.script, 'utf8'), { filename: opts.script });
const V = globalThis.PopVerify;
const fixture = JSON.parse(fs.readFileSync(opts.fixture, 'utf8'));

let failures = 0;
let count = 0;
function check(cond, message) {
  ++count;
  if (cond) console.log(`ok ${count} - ${message}`);
  else { ++failures; console.log(`not ok ${count} - ${message}`); }
}
const clone = (x) => structuredClone(x);
const flipHex = (hex, at = 0) => hex.slice(0, at) + ((parseInt(hex[at], 16) ^ 1).toString(16)) + hex.slice(at + 1);
const root = fixture.trust_root;
const good = fixture.check;
const cps = () => good.commit_proof.certificate.checkpoints;

// Refused, and for the reason expected (kind), so a test cannot pass by failing elsewhere.
async function refused(answer, trust, kind, message) {
  checkResult(await V.verifyTxAnswer(answer, trust), kind, message);
}
function checkResult(r, kind, message) {
  check(!r.ok && (!kind || r.kind === kind), `${message}: refused${kind ? ` (${kind})` : ''}${r.ok ? ' -- but it PASSED' : `: ${r.kind}: ${r.reason}`}`);
}

// ---- encodings agree with the C++ code -----------------------------------------------------
check(V.quorum(fixture.trust_root.replicas.length) === fixture.cpp.quorum, `quorum(4) = ${fixture.cpp.quorum} as in pbft/config.hpp`);
check(V.quorum(4) === 3 && V.quorum(5) === 4 && V.quorum(7) === 5 && V.quorum(64) === 43 && V.quorum(1) === 1,
  'quorum(n) matches the static_asserts of pbft/config.hpp');
check(await V.headerHash(good.header) === good.header.hash && good.header.hash === good.block_hash,
  'the header hash computed here is BlockHeader::hash()');
for (const h of good.commit_proof.headers) check(await V.headerHash(h) === h.hash, `header ${h.height} hashes as in C++`);
check(await V.txId(good.tx) === good.txid, 'the transaction id computed here is Tx::id()');
const digests = await Promise.all(cps().map(async (c) => V.bytesHex(await V.sha256(V.checkpointSignedBytes(c)))));
check(JSON.stringify(digests) === JSON.stringify(fixture.cpp.signed_digests), 'the checkpoint bytes hash to Checkpoint::signed_digest()');
check(await V.replicaSetFingerprint(root.replicas) === root.fingerprint, 'the set fingerprint computed here is popmarket\'s');
for (const r of root.replicas) {
  const raw = V.decompressP256(V.hexBytes(r.public_key));
  check(raw && raw.length === 65 && V.bytesHex(raw.slice(1, 33)) === r.public_key.slice(2) && (raw[64] & 1) === (parseInt(r.public_key.slice(0, 2), 16) & 1),
    `replica ${r.id}'s key decompresses to a point with its x and y parity`);
}
check(V.decompressP256(V.hexBytes('02' + 'ff'.repeat(32))) === null, 'a key with x >= p is refused');

// ---- the real answers pass -----------------------------------------------------------------
const real = await V.verifyTxAnswer(good, root);
check(real.ok && real.blockHash === good.block_hash && real.checkpoint === cps()[0].seq, `the real transaction answer verifies (${real.reason})`);
const realBlock = await V.verifyBlockAnswer(fixture.block_answer, root);
check(realBlock.ok, `the real block answer verifies (${realBlock.reason})`);
{
  // The signers in another order, and a set that lists a non-signer less, still verify.
  const c = clone(good);
  c.commit_proof.certificate.checkpoints.reverse();
  check((await V.verifyTxAnswer(c, root)).ok, 'the signatures in another order verify');
}

// ---- signatures ----------------------------------------------------------------------------
for (let i = 0; i < cps().length; ++i) {
  for (const at of [0, 63, 64, 127]) {
    const c = clone(good);
    const cp = c.commit_proof.certificate.checkpoints[i];
    cp.signature = flipHex(cp.signature, at);
    await refused(c, root, 'certificate', `checkpoint ${i} with signature hex digit ${at} altered`);
  }
}
{
  // (r, n - s) is a valid ECDSA signature too; the library accepts only low S.
  const c = clone(good);
  const cp = c.commit_proof.certificate.checkpoints[0];
  const n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
  const s = BigInt('0x' + cp.signature.slice(64));
  cp.signature = cp.signature.slice(0, 64) + (n - s).toString(16).padStart(64, '0');
  const member = root.replicas.find((r) => r.id === cp.replica);
  const highS = V.hexBytes(cp.signature);
  const key = await crypto.subtle.importKey('raw', V.decompressP256(V.hexBytes(member.public_key)), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  check(await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, highS, V.checkpointSignedBytes(cp)),
    'the high-S twin is a valid signature to WebCrypto (so the low-S rule is what refuses it)');
  await refused(c, root, 'certificate', 'a checkpoint signed with the high-S twin');
}
for (const field of ['seq', 'block_hash', 'state_root']) {
  const c = clone(good);
  const cp = c.commit_proof.certificate.checkpoints[1];
  cp[field] = field === 'seq' ? cp.seq + 1 : flipHex(cp[field]);
  await refused(c, root, 'certificate', `one checkpoint with its ${field} altered`);
}
{
  // Every checkpoint names another replica: the signed bytes include the replica's id.
  const c = clone(good);
  const cp = c.commit_proof.certificate.checkpoints[0];
  const spare = root.replicas.find((r) => !cps().some((x) => x.replica === r.id));
  cp.replica = spare.id;
  await refused(c, root, 'certificate', 'a checkpoint relabelled as another member');
}

// ---- quorum and distinct members -----------------------------------------------------------
{
  const c = clone(good);
  const list = c.commit_proof.certificate.checkpoints;
  list[2] = clone(list[0]);
  await refused(c, root, 'certificate', 'a signer duplicated in place of another (fewer than quorum distinct)');
  const d = clone(good);
  d.commit_proof.certificate.checkpoints.push(clone(d.commit_proof.certificate.checkpoints[0]));
  await refused(d, root, 'certificate', 'a signer duplicated on top of a quorum');
  const e = clone(good);
  e.commit_proof.certificate.checkpoints.pop();
  await refused(e, root, 'membership', 'one signature short of the quorum');
  const f = clone(good);
  f.commit_proof.certificate.checkpoints = [];
  await refused(f, root, 'certificate', 'an empty certificate');
}
{
  // A valid signature, by a key outside the set, under a member's id or a new id.
  const c = clone(good);
  c.commit_proof.certificate.checkpoints[0] = clone(fixture.outsider.checkpoint);
  await refused(c, root, 'certificate', 'a member\'s checkpoint replaced by one an outsider signed under its id');
  const d = clone(good);
  d.commit_proof.certificate.checkpoints[0] = { ...clone(fixture.outsider.checkpoint), replica: 9 };
  await refused(d, root, 'membership', 'a checkpoint from a replica outside the set');
}

// ---- the trust root ------------------------------------------------------------------------
{
  const swapped = clone(root);
  [swapped.replicas[0].public_key, swapped.replicas[1].public_key] = [swapped.replicas[1].public_key, swapped.replicas[0].public_key];
  await refused(good, swapped, 'certificate', 'a set with two members\' keys swapped');
  const replaced = clone(root);
  replaced.replicas[3].public_key = fixture.outsider.public_key;
  await refused(good, replaced, 'certificate', 'a set with one signer\'s key replaced');
  const bigger = clone(root);
  for (let i = 4; i < 7; ++i) bigger.replicas.push({ id: i, public_key: fixture.outsider.public_key });
  await refused(good, bigger, 'membership', 'a set of 7 (quorum 5) for a certificate of 3');
  await refused(good, { replicas: [] }, 'membership', 'no trusted set');
  // The set must come from the trust root: the answer's own claims are not used.
  const answerSet = clone(good);
  answerSet.replica_set = 'genesis';
  answerSet.trust_root = clone(swapped);
  check((await V.verifyTxAnswer(answerSet, root)).ok && !(await V.verifyTxAnswer(answerSet, swapped)).ok,
    'only the trust root passed in decides the set');
}

// ---- headers and the chain -----------------------------------------------------------------
for (const field of ['height', 'prev_hash', 'tx_root', 'state_root', 'view', 'proposer', 'timestamp_ms']) {
  const c = clone(good);
  const h = c.header;
  h[field] = typeof h[field] === 'number' ? h[field] + 1 : flipHex(h[field], 10);
  if (field === 'height') c.height = h.height; // consistent claim, broken chain
  await refused(c, root, field === 'tx_root' ? 'merkle' : 'chain', `the transaction's header with ${field} altered`);
}
for (let i = 0; i < good.commit_proof.headers.length; ++i) {
  for (const field of ['height', 'prev_hash', 'state_root', 'timestamp_ms']) {
    const c = clone(good);
    const h = c.commit_proof.headers[i];
    h[field] = typeof h[field] === 'number' ? h[field] + 1 : flipHex(h[field], 5);
    await refused(c, root, 'chain', `proof header ${h.height} with ${field} altered`);
  }
}
{
  const c = clone(good);
  c.commit_proof.headers.splice(0, 1);
  await refused(c, root, 'chain', 'a proof header left out');
  const d = clone(good);
  d.commit_proof.headers.pop();
  await refused(d, root, 'chain', 'the checkpoint block\'s header left out');
  const e = clone(good);
  e.header.hash = flipHex(e.header.hash);
  e.block_hash = e.header.hash;
  check((await V.verifyTxAnswer(e, root)).ok, 'the answer\'s own "hash" fields are not trusted, only recomputed');
  const f = clone(good);
  delete f.commit_proof;
  await refused(f, root, 'uncertified', 'no commit proof');
  const g = clone(good);
  g.header.height = 2 ** 53;
  g.height = g.header.height;
  await refused(g, root, 'malformed', 'a height beyond exact JSON numbers');
}

// ---- the transaction and its Merkle proof --------------------------------------------------
for (const [field, change] of [['amount', (v) => v + 1], ['to', () => good.tx.from], ['payload', (v) => v + '00'], ['trade_id', (v) => flipHex(v, 3)], ['deadline', (v) => v + 1]]) {
  const c = clone(good);
  c.tx[field] = change(c.tx[field]);
  await refused(c, root, 'malformed', `the transaction's ${field} altered`);
}
{
  const c = clone(good);
  c.txid = flipHex(c.txid);
  await refused(c, root, 'malformed', 'another transaction id claimed');
  const d = clone(good);
  d.merkle_proof.siblings[0] = flipHex(d.merkle_proof.siblings[0]);
  await refused(d, root, 'merkle', 'a Merkle sibling altered');
  const e = clone(good);
  e.merkle_proof.index += 1;
  e.index = e.merkle_proof.index;
  await refused(e, root, 'merkle', 'another Merkle position');
  const e2 = clone(good);
  e2.index += 1;
  await refused(e2, root, 'malformed', 'a position shown that is not the proof\'s');
  const f = clone(good);
  f.tx_root = flipHex(f.tx_root);
  check((await V.verifyTxAnswer(f, root)).ok, 'the Merkle root is the certified header\'s, not the answer\'s "tx_root"');
}

// ---- the block answer ----------------------------------------------------------------------
{
  const a = clone(fixture.block_answer);
  a.block.txs[0].amount += 1;
  checkResult(await V.verifyBlockAnswer(a, root), 'malformed', 'a block answer with a transaction altered (its id shown no longer matches)');
  a.block.txs[0].id = await V.txId(a.block.txs[0]);
  checkResult(await V.verifyBlockAnswer(a, root), 'merkle', 'a block answer with a transaction altered and its id recomputed');
  const b = clone(fixture.block_answer);
  b.block.txs.pop();
  checkResult(await V.verifyBlockAnswer(b, root), 'merkle', 'a block answer with a transaction left out');
  const c = clone(fixture.block_answer);
  c.commit_proof.certificate.checkpoints[1].signature = flipHex(c.commit_proof.certificate.checkpoints[1].signature, 70);
  checkResult(await V.verifyBlockAnswer(c, root), 'certificate', 'a block answer with a signature altered');
}

console.log(`${count - failures} of ${count} checks passed`);
process.exitCode = failures ? 1 : 0;
