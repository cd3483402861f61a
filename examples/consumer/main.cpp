// The smallest useful program against libpopchain: start a chain, sign a payment, commit it
// in a block, and check the result. Exits non-zero if anything is off.
#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>
#include <popchain/ledger.hpp>
#include <popchain/transaction.hpp>

#include <cstdio>

int main() {
    using namespace popchain;
    SigningKey authority = SigningKey::generate();
    SigningKey alice = SigningKey::generate();
    SigningKey bob = SigningKey::generate();

    Genesis genesis;
    genesis.params = {"consumer-example", authority.public_key(), {}};
    genesis.replicas = {{0, SigningKey::generate().public_key(), ""}};
    genesis.balances = {{alice.address(), 100}};
    auto ledger = genesis.ledger();
    if (!ledger) return std::fprintf(stderr, "%s\n", ledger.error().message().c_str()), 1;

    Tx pay;
    pay.kind = TxKind::transfer;
    pay.chain_id = "consumer-example";
    pay.to = bob.address();
    pay.amount = 40;
    BuiltBlock next = ledger->build_block({sign_tx(pay, alice)}, 0, 0, 0);
    if (!next.rejected.empty())
        return std::fprintf(stderr, "%s\n", next.rejected[0].error.message().c_str()), 1;
    if (auto applied = ledger->apply(next.block); !applied)
        return std::fprintf(stderr, "%s\n", applied.error().message().c_str()), 1;

    std::printf("block %llu %s: alice %llu, bob %llu\n",
                static_cast<unsigned long long>(ledger->height()),
                to_hex(next.block.hash()).c_str(),
                static_cast<unsigned long long>(ledger->account(alice.address()).balance),
                static_cast<unsigned long long>(ledger->account(bob.address()).balance));
    bool ok = ledger->account(alice.address()).balance == 60 &&
              ledger->account(bob.address()).balance == 40 && ledger->check_invariants().ok();
    return ok ? 0 : 1;
}
