// Writes the seed corpora for the fuzz targets: valid encodings a mutator can start from,
// covering every transaction kind, blocks with and without transactions and certificates,
// and genesis files. Generated rather than checked in, so the seeds follow the encoding
// whenever it changes.
//
//   fuzz_make_seeds OUT_DIR    ->  OUT_DIR/fuzz_tx_decode/, fuzz_block_decode/, fuzz_genesis_json/,
//                                  fuzz_pbft_decode/
//
// Block seed "block-1" is height 1 on fuzz::genesis(), so fuzz_block_decode can execute it
// (and its mutants) all the way through Ledger::execute.
#include "fuzz_common.hpp"

#include <popchain/block.hpp>
#include <popchain/hex.hpp>
#include <popchain/ledger.hpp>
#include <popchain/pbft/messages.hpp>
#include <popchain/transaction.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

using namespace popchain;
namespace fs = std::filesystem;

namespace {

void write_file(const fs::path& dir, const std::string& name, ByteView content) {
    fs::create_directories(dir);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(content.data()),
              static_cast<std::streamsize>(content.size()));
    if (!out) {
        std::cerr << "fuzz_make_seeds: cannot write " << (dir / name) << "\n";
        std::exit(1);
    }
}

Tx unsigned_tx(TxKind kind, std::uint64_t nonce) {
    Tx tx;
    tx.kind = kind;
    tx.chain_id = fuzz::chain_id;
    tx.nonce = nonce;
    return tx;
}

// Builds the next block from `txs` and insists that the builder accepted all of them, so the
// seeds are known to be valid blocks, not just well-formed bytes.
BuiltBlock next_block(Ledger& ledger, const std::vector<Tx>& txs, std::uint64_t view) {
    BuiltBlock built = ledger.build_block(txs, view, 0, 1'700'000'000'000 + view);
    if (!built.rejected.empty()) {
        std::cerr << "fuzz_make_seeds: builder rejected a seed tx: "
                  << built.rejected.front().error.message() << "\n";
        std::exit(1);
    }
    ledger.commit(built.delta);
    return built;
}

// A certificate as consensus would attach it: replica signatures over the block hash.
void certify(Block& block, std::uint64_t view, std::initializer_list<std::uint32_t> replicas) {
    block.certificate.view = view;
    for (std::uint32_t id : replicas)
        block.certificate.signatures.push_back(
            {id, fuzz::key("replica-" + std::to_string(id)).sign(block.hash())});
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: fuzz_make_seeds OUT_DIR\n";
        return 2;
    }
    const fs::path out = argv[1];
    const fs::path tx_dir = out / "fuzz_tx_decode";
    const fs::path block_dir = out / "fuzz_block_decode";
    const fs::path genesis_dir = out / "fuzz_genesis_json";
    const fs::path pbft_dir = out / "fuzz_pbft_decode";

    const SigningKey authority = fuzz::key("authority");
    const SigningKey alice = fuzz::key("alice");
    const SigningKey bob = fuzz::key("bob");
    const SigningKey replica1 = fuzz::key("replica-1");

    const Genesis genesis = fuzz::genesis();
    auto genesis_block = genesis.build();
    auto ledger_or = genesis.ledger();
    if (!genesis_block || !ledger_or) {
        std::cerr << "fuzz_make_seeds: the fuzz genesis does not build\n";
        return 1;
    }
    Ledger ledger = std::move(ledger_or).value();

    // Block 1: every kind but release/refund, which need an escrow from an earlier block.
    std::vector<Tx> block1_txs;
    {
        Tx mint = unsigned_tx(TxKind::mint, 0);
        mint.to = bob.address();
        mint.amount = 250;
        mint.payload = to_bytes("top-up #1");
        block1_txs.push_back(sign_tx(mint, authority));

        Tx transfer = unsigned_tx(TxKind::transfer, 0);
        transfer.to = bob.address();
        transfer.amount = 1234;
        block1_txs.push_back(sign_tx(transfer, alice));

        Tx open1 = unsigned_tx(TxKind::escrow_open, 1);
        open1.to = bob.address();
        open1.amount = 5000;
        open1.trade_id = sha256(std::string("trade-1"));
        open1.deadline = 10;
        open1.payload = to_bytes("order 1: one bicycle");
        block1_txs.push_back(sign_tx(open1, alice));

        Tx open2 = open1;
        open2.nonce = 2;
        open2.trade_id = sha256(std::string("trade-2"));
        open2.amount = 70;
        open2.deadline = 1;
        open2.payload.clear();
        block1_txs.push_back(sign_tx(open2, alice));

        ConfigChange add;
        add.action = ConfigChange::Action::add_replica;
        add.replica = {1, replica1.public_key(), "127.0.0.1:7001"};
        Tx config = unsigned_tx(TxKind::config, 1);
        config.payload = add.encode();
        block1_txs.push_back(sign_tx(config, authority));
    }
    BuiltBlock block1 = next_block(ledger, block1_txs, 1);
    certify(block1.block, 1, {0});

    // Block 2: release one escrow, the seller refunds the other, a replica leaves.
    std::vector<Tx> block2_txs;
    {
        Tx release = unsigned_tx(TxKind::escrow_release, 3);
        release.trade_id = sha256(std::string("trade-1"));
        block2_txs.push_back(sign_tx(release, alice));

        Tx refund = unsigned_tx(TxKind::escrow_refund, 0);
        refund.trade_id = sha256(std::string("trade-2"));
        block2_txs.push_back(sign_tx(refund, bob));

        ConfigChange remove;
        remove.action = ConfigChange::Action::remove_replica;
        remove.replica.id = 1;
        Tx config = unsigned_tx(TxKind::config, 2);
        config.payload = remove.encode();
        block2_txs.push_back(sign_tx(config, authority));

        Tx self = unsigned_tx(TxKind::transfer, 1);
        self.to = bob.address(); // a transfer to oneself only advances the nonce
        self.amount = 1;
        block2_txs.push_back(sign_tx(self, bob));
    }
    BuiltBlock block2 = next_block(ledger, block2_txs, 2);
    certify(block2.block, 2, {0, 1});

    // Block 3: empty, uncertified.
    BuiltBlock block3 = next_block(ledger, {}, 3);

    if (!ledger.check_invariants()) {
        std::cerr << "fuzz_make_seeds: invariants broken after the seed blocks\n";
        return 1;
    }

    // Transaction seeds: every tx above, plus the longest fields the codec allows.
    std::size_t tx_seeds = 0;
    auto add_tx = [&](const Tx& tx) {
        write_file(tx_dir, "tx-" + to_hex(tx.id()).substr(0, 16), tx.encode());
        ++tx_seeds;
    };
    for (const auto& tx : block1_txs)
        add_tx(tx);
    for (const auto& tx : block2_txs)
        add_tx(tx);
    {
        Tx big = unsigned_tx(TxKind::transfer, 7);
        big.chain_id = std::string(max_chain_id_bytes, 'c');
        big.to = alice.address();
        big.amount = ~std::uint64_t{0};
        big.payload = Bytes(max_payload_bytes, 0xa5);
        add_tx(sign_tx(big, bob));
    }
    {
        // Commands (consensus-only chains): unsigned, and signed with a longer command.
        Tx command = unsigned_tx(TxKind::command, 4);
        command.from = alice.address();
        command.payload = Bytes(8, 0x3c);
        add_tx(command);
        command.payload = Bytes(200, 0x3d);
        add_tx(sign_tx(command, alice));
    }

    write_file(block_dir, "block-0-genesis", genesis_block->block.encode());
    write_file(block_dir, "block-1", block1.block.encode());
    write_file(block_dir, "block-2", block2.block.encode());
    write_file(block_dir, "block-3-empty", block3.block.encode());

    // Replica messages: a type byte, then the body (fuzz_pbft_decode.cpp).
    {
        using namespace popchain::pbft;
        auto typed = [](MsgType type, ByteView body) {
            Bytes b{static_cast<std::uint8_t>(type)};
            b.insert(b.end(), body.begin(), body.end());
            return b;
        };
        const Bytes vote = encode_body(Vote{2, 1, block1.block.hash()});
        const Bytes fetch = encode_body(Fetch{1, 3});
        const Bytes pre_prepare = encode_body(PrePrepare{2, 1, block1.block});
        write_file(pbft_dir, "prepare", typed(MsgType::prepare, vote));
        write_file(pbft_dir, "fetch", typed(MsgType::fetch, fetch));
        write_file(pbft_dir, "pre-prepare", typed(MsgType::pre_prepare, pre_prepare));
        write_file(pbft_dir, "request",
                   typed(MsgType::request, encode_body(Request{block1_txs[1]})));
        write_file(pbft_dir, "bundle",
                   typed(MsgType::bundle, encode_bundle({{MsgType::prepare, vote},
                                                         {MsgType::commit, vote},
                                                         {MsgType::fetch, fetch}})));
    }

    auto write_text = [&](const std::string& name, const std::string& text) {
        write_file(genesis_dir, name, as_bytes(text));
    };
    write_text("genesis-fuzz.json", genesis.to_json());
    {
        // The smallest accepted form: no timestamp, endpoint or balances.
        write_text("genesis-minimal.json", "{\"chain_id\":\"m\",\"authority\":\"" +
                                               to_hex(authority.public_key()) +
                                               "\",\"replicas\":[{\"id\":7,\"public_key\":\"" +
                                               to_hex(bob.public_key()) + "\"}]}");
        Genesis four = fuzz::genesis();
        for (std::uint32_t id = 1; id < 4; ++id)
            four.replicas.push_back({id, fuzz::key("replica-" + std::to_string(id)).public_key(),
                                     "10.0.0." + std::to_string(id) + ":7000"});
        four.balances.emplace_back(authority.address(), ~std::uint64_t{0} - 1'000'500);
        write_text("genesis-four-replicas.json", four.to_json());
        Genesis commands = fuzz::genesis();
        commands.params.commands = CommandRules{8, true};
        write_text("genesis-commands.json", commands.to_json());
    }

    std::cout << "fuzz_make_seeds: " << tx_seeds
              << " tx, 4 block, 4 genesis and 5 replica message seeds in " << out.string() << "\n";
    return 0;
}
