#include <popchain/application.hpp>
#include <popchain/codec.hpp>

namespace popchain {

std::vector<Bytes> NoopApplication::execute(const Block& block) {
    Writer w;
    w.u64(block.header.height);
    std::vector<Bytes> results;
    for (const Tx& tx : block.txs) {
        if (tx.kind != TxKind::command) continue;
        w.bytes(tx.payload); // length-prefixed: the concatenation has one reading
        results.emplace_back();
    }
    digest_ = Sha256().update("popchain/noop/v1").update(digest_).update(w.data()).finish();
    executed_ += results.size();
    height_ = block.header.height;
    return results;
}

Address command_client(std::uint64_t n) {
    Writer w(16);
    w.u64(0x706f70636d64ull); // "popcmd"
    w.u64(n);
    Address a;
    std::copy(w.data().begin(), w.data().end(), a.bytes.begin());
    return a;
}

Tx make_command(std::string chain_id, const Address& client, std::uint64_t nonce, Bytes command) {
    Tx tx;
    tx.kind = TxKind::command;
    tx.chain_id = std::move(chain_id);
    tx.from = client;
    tx.nonce = nonce;
    tx.payload = std::move(command);
    return tx;
}

} // namespace popchain
