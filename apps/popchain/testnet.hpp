// A local testnet directory (docs/node.md, "Files in a testnet directory") and the commands
// that manage it: testnet init, up, down, status; and tx transfer, which submits to it.
#pragma once

#include <popchain/genesis.hpp>
#include <popchain/result.hpp>

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace popchain::cli {

// Where everything of a testnet lives, relative to its directory.
struct Layout {
    std::filesystem::path dir;

    std::filesystem::path genesis() const { return dir / "genesis.json"; }
    std::filesystem::path passphrase() const { return dir / "passphrase"; }
    std::filesystem::path authority_key() const { return dir / "authority.key"; }
    std::filesystem::path wallets() const { return dir / "wallets"; }
    std::filesystem::path node_dir(std::uint32_t i) const {
        return dir / ("node" + std::to_string(i));
    }
    std::filesystem::path config(std::uint32_t i) const { return node_dir(i) / "config.json"; }
    std::filesystem::path pid_file(std::uint32_t i) const { return node_dir(i) / "node.pid"; }
    std::filesystem::path log_file(std::uint32_t i) const { return node_dir(i) / "node.log"; }
    std::filesystem::path chain_db(std::uint32_t i) const {
        return node_dir(i) / "data" / "chain.db";
    }
    // The node numbers i with a node<i>/config.json, in order.
    std::vector<std::uint32_t> nodes() const;
};

// The testnet directory named by --dir, absolute and lexically normal. invalid_argument
// (the caller's usage error, exit 2) for an empty --dir or one that cannot be made absolute.
Result<Layout> layout_of(const std::string& dir);

// The pid in `i`'s pid file if that process is alive and is a popchain node; stale pid files
// (a dead process, a reused pid) read as not running.
std::optional<pid_t> running_pid(const Layout& layout, std::uint32_t i);

// The testnet's passphrase (the first line of its passphrase file).
Result<std::string> read_testnet_passphrase(const Layout& layout);
// Reads a file whole.
Result<std::string> read_file(const std::filesystem::path& file);

int cmd_testnet_init(int argc, char** argv, int first);
int cmd_testnet_up(int argc, char** argv, int first);
int cmd_testnet_down(int argc, char** argv, int first);
int cmd_testnet_status(int argc, char** argv, int first);
int cmd_tx_transfer(int argc, char** argv, int first);

} // namespace popchain::cli
