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

} // namespace popchain
