#include <popchain/hex.hpp>
#include <popchain/keystore.hpp>
#include <popchain/wallet.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include <sys/stat.h>

using namespace popchain;
using popchain::test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string chain = "wallet-test-chain";

// Keeps the suite fast: the smallest scrypt parameters Botan's tuner produces.
constexpr std::size_t fast_kdf_msec = 1;

std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_text(const fs::path& p, const std::string& content) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << content;
}

unsigned file_mode(const fs::path& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

std::vector<std::string> dir_names(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir))
        names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

// The PEM body of a key file, base64-decoded: the DER the secret would sit in if it were
// stored in the clear.
Bytes pem_body_der(const std::string& file) {
    auto begin = file.find("-----BEGIN");
    begin = file.find('\n', begin) + 1;
    auto end = file.find("-----END");
    Bytes out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (std::size_t i = begin; i < end; ++i) {
        char c = file[i];
        int v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else
            continue; // newlines and padding
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<std::uint8_t>(acc >> bits));
        }
    }
    return out;
}

bool contains_bytes(const Bytes& hay, ByteView needle) {
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

std::string base64(const Bytes& in) {
    static constexpr char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (std::size_t i = 0; i < in.size(); i += 3) {
        std::uint32_t chunk = std::uint32_t{in[i]} << 16;
        if (i + 1 < in.size()) chunk |= std::uint32_t{in[i + 1]} << 8;
        if (i + 2 < in.size()) chunk |= in[i + 2];
        out += digits[chunk >> 18 & 63];
        out += digits[chunk >> 12 & 63];
        out += i + 1 < in.size() ? digits[chunk >> 6 & 63] : '=';
        out += i + 2 < in.size() ? digits[chunk & 63] : '=';
    }
    return out;
}

Hash256 trade(std::uint8_t n) {
    Hash256 h;
    h.bytes.fill(n);
    return h;
}

} // namespace

TEST_SUITE("wallet") {
    TEST_CASE("generate gives a fresh key with its alias and address") {
        Wallet a = Wallet::generate("alice");
        Wallet b = Wallet::generate("bob");
        CHECK(a.alias() == "alice");
        CHECK(a.address() == Address::of(a.public_key()));
        CHECK(a.address() == a.signing_key().address());
        CHECK(a.address() != b.address());
    }

    TEST_CASE("every builder produces a signed tx that passes the stateless checks") {
        Wallet w = Wallet::generate("w");
        Wallet other = Wallet::generate("other");
        Bytes memo = to_bytes("order 42");
        ConfigChange change;
        change.action = ConfigChange::Action::add_replica;
        change.replica.id = 7;
        change.replica.key = other.public_key();
        change.replica.endpoint = "127.0.0.1:7007";

        std::vector<Tx> txs = {
            w.transfer(chain, 0, other.address(), 10, memo),
            w.mint(chain, 1, other.address(), 500),
            w.escrow_open(chain, 2, other.address(), 25, trade(1), 100, memo),
            w.escrow_release(chain, 3, trade(1)),
            w.escrow_refund(chain, 4, trade(2), memo),
            w.config(chain, 5, change),
        };
        for (std::size_t i = 0; i < txs.size(); ++i) {
            const Tx& tx = txs[i];
            CAPTURE(tx_kind_name(tx.kind));
            CHECK(check_tx_stateless(tx, chain).ok());
            CHECK(tx.from == w.address());
            CHECK(tx.public_key == w.public_key());
            CHECK(tx.nonce == i);
            CHECK(tx.chain_id == chain);
        }
        CHECK(txs[0].kind == TxKind::transfer);
        CHECK(txs[0].payload == memo);
        CHECK(txs[0].amount == 10);
        CHECK(txs[1].kind == TxKind::mint);
        CHECK(txs[2].kind == TxKind::escrow_open);
        CHECK(txs[2].to == other.address());
        CHECK(txs[2].trade_id == trade(1));
        CHECK(txs[2].deadline == 100);
        CHECK(txs[3].kind == TxKind::escrow_release);
        CHECK(txs[4].kind == TxKind::escrow_refund);
        CHECK(txs[5].kind == TxKind::config);
        auto decoded = decode_config_change(txs[5].payload);
        REQUIRE(decoded.ok());
        CHECK(*decoded == change);
        // Another chain's replicas must not accept it.
        CHECK(check_tx_stateless(txs[0], "other-chain").code() == Errc::wrong_chain_id);
    }

    TEST_CASE("sign fills in sender and key of a hand-built tx") {
        Wallet w = Wallet::generate("w");
        Tx tx;
        tx.kind = TxKind::transfer;
        tx.chain_id = chain;
        tx.to = Wallet::generate("x").address();
        tx.amount = 3;
        Tx signed_tx = w.sign(tx);
        CHECK(signed_tx.from == w.address());
        CHECK(check_tx_stateless(signed_tx, chain).ok());
    }
}

TEST_SUITE("keystore") {
    TEST_CASE("round trip: the loaded key signs for the original public key") {
        TempDir tmp;
        Keystore ks(tmp.path() / "keys", fast_kdf_msec);
        auto created = ks.create("alice", "correct horse");
        REQUIRE(created.ok());
        PublicKey original = created->public_key();

        auto loaded = ks.load("alice", "correct horse");
        REQUIRE(loaded.ok());
        CHECK(loaded->alias() == "alice");
        CHECK(loaded->address() == created->address());
        Hash256 digest = sha256(std::string_view("message"));
        CHECK(verify(original, digest, loaded->signing_key().sign(digest)));
        Tx tx = loaded->transfer(chain, 0, created->address(), 1);
        CHECK(check_tx_stateless(tx, chain).ok());
        CHECK(tx.public_key == original);
    }

    TEST_CASE("key file and directory are private; no temporary file is left") {
        TempDir tmp;
        fs::path dir = tmp.path() / "nested" / "keys";
        Keystore ks(dir, fast_kdf_msec);
        // A umask that lets everything through shows the mode comes from open(), not luck.
        mode_t old_mask = ::umask(0);
        auto created = ks.create("alice", "pw");
        ::umask(old_mask);
        REQUIRE(created.ok());
        CHECK(file_mode(ks.path_of("alice")) == 0600);
        CHECK(file_mode(dir) == 0700);
        CHECK(dir_names(dir) == std::vector<std::string>{"alice.key"});
    }

    TEST_CASE("wrong and empty passphrases") {
        TempDir tmp;
        Keystore ks(tmp.path(), fast_kdf_msec);
        REQUIRE(ks.create("alice", "right").ok());
        CHECK(ks.load("alice", "wrong").code() == Errc::wrong_passphrase);
        CHECK(ks.load("alice", "righ").code() == Errc::wrong_passphrase);
        CHECK(ks.load("alice", "").code() == Errc::invalid_argument);

        CHECK(ks.create("bob", "").code() == Errc::invalid_argument);
        CHECK(ks.save(Wallet::generate("carol"), "").code() == Errc::invalid_argument);
        CHECK_FALSE(ks.contains("bob"));
        CHECK_FALSE(ks.contains("carol"));
    }

    TEST_CASE("a missing key is not_found") {
        TempDir tmp;
        Keystore ks(tmp.path(), fast_kdf_msec);
        CHECK(ks.load("nobody", "pw").code() == Errc::not_found);
        Keystore nowhere(tmp.path() / "does-not-exist", fast_kdf_msec);
        CHECK(nowhere.load("nobody", "pw").code() == Errc::not_found);
        CHECK(nowhere.list().empty());
    }

    TEST_CASE("an existing alias is never overwritten") {
        TempDir tmp;
        Keystore ks(tmp.path(), fast_kdf_msec);
        auto first = ks.create("alice", "one");
        REQUIRE(first.ok());
        std::string before = read_text(ks.path_of("alice"));

        CHECK(ks.create("alice", "two").code() == Errc::invalid_argument);
        CHECK(ks.save(Wallet::generate("alice"), "two").code() == Errc::invalid_argument);
        CHECK(read_text(ks.path_of("alice")) == before);
        auto loaded = ks.load("alice", "one");
        REQUIRE(loaded.ok());
        CHECK(loaded->address() == first->address());
        CHECK(dir_names(tmp.path()) == std::vector<std::string>{"alice.key"});
    }

    TEST_CASE("bad aliases are refused and cannot escape the directory") {
        TempDir tmp;
        fs::path dir = tmp.path() / "keys";
        Keystore ks(dir, fast_kdf_msec);
        const std::vector<std::string> bad = {"",
                                              "../x",
                                              "a/b",
                                              "/abs",
                                              "a b",
                                              "tab\t",
                                              "new\nline",
                                              "caf\xc3\xa9",
                                              std::string(65, 'a'),
                                              std::string("nul\0byte", 8)};
        for (const auto& alias : bad) {
            CAPTURE(alias);
            CHECK(validate_alias(alias).code() == Errc::invalid_argument);
            CHECK(ks.create(alias, "pw").code() == Errc::invalid_argument);
            CHECK(ks.save(Wallet::generate(alias), "pw").code() == Errc::invalid_argument);
            CHECK(ks.load(alias, "pw").code() == Errc::invalid_argument);
            CHECK_FALSE(ks.contains(alias));
        }
        CHECK_FALSE(fs::exists(tmp.path() / "x.key"));

        // The longest alias, and aliases made of dots, which stay inside thanks to ".key".
        for (std::string alias :
             {std::string(64, 'z'), std::string(".."), std::string("."), std::string("A-b_c.9")}) {
            CAPTURE(alias);
            REQUIRE(ks.create(alias, "pw").ok());
            CHECK(ks.contains(alias));
            CHECK(ks.path_of(alias).parent_path() == dir);
            CHECK(ks.load(alias, "pw").ok());
        }
        CHECK(dir_names(tmp.path()) == std::vector<std::string>{"keys"});
    }

    TEST_CASE("list needs no passphrase, is sorted and skips junk") {
        TempDir tmp;
        Keystore ks(tmp.path(), fast_kdf_msec);
        CHECK(ks.list().empty());
        std::map<std::string, Address> made;
        for (std::string alias : {"mallory", "alice", "bob"}) {
            auto w = ks.create(alias, "pw-" + alias);
            REQUIRE(w.ok());
            made[alias] = w->address();
        }
        write_text(tmp.path() / "junk.key", "not a key file\n");
        write_text(tmp.path() / "notes.txt", "hello\n");
        write_text(tmp.path() / "bad alias.key", read_text(ks.path_of("bob")));
        fs::create_directory(tmp.path() / "dir.key");
        // A copy under another name still names "bob" inside: not listed as "eve".
        write_text(tmp.path() / "eve.key", read_text(ks.path_of("bob")));

        auto entries = ks.list();
        REQUIRE(entries.size() == 3);
        CHECK(entries[0] == KeystoreEntry{"alice", made["alice"]});
        CHECK(entries[1] == KeystoreEntry{"bob", made["bob"]});
        CHECK(entries[2] == KeystoreEntry{"mallory", made["mallory"]});
        CHECK(ks.contains("alice"));
        CHECK_FALSE(ks.contains("carol"));
        CHECK(ks.load("eve", "pw-bob").code() == Errc::storage_corrupt);
        CHECK(ks.load("dir", "pw").code() == Errc::malformed);
    }

    TEST_CASE("the secret scalar is not in the file") {
        Bytes secret(32);
        for (std::size_t i = 0; i < secret.size(); ++i)
            secret[i] = static_cast<std::uint8_t>(0xa0 + i);
        auto key = SigningKey::from_secret(secret);
        REQUIRE(key.ok());
        Wallet w("known", std::move(*key));
        Address address = w.address();

        TempDir tmp;
        Keystore ks(tmp.path(), fast_kdf_msec);
        REQUIRE(ks.save(w, "pw").ok());
        std::string file = read_text(ks.path_of("known"));

        std::string hex = to_hex(ByteView(secret));
        std::string upper = hex;
        std::transform(upper.begin(), upper.end(), upper.begin(),
                       [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
        CHECK(file.find(hex) == std::string::npos);
        CHECK(file.find(upper) == std::string::npos);
        CHECK_FALSE(contains_bytes(Bytes(file.begin(), file.end()), secret));
        CHECK_FALSE(contains_bytes(pem_body_der(file), secret));
        CHECK(file.find("BEGIN ENCRYPTED PRIVATE KEY") != std::string::npos);
        CHECK(file.find("BEGIN PRIVATE KEY") == std::string::npos);
        CHECK(file.find("BEGIN EC PRIVATE KEY") == std::string::npos);
        // The non-secret header is there in plain text.
        CHECK(file.find("alias: known\n") != std::string::npos);
        CHECK(file.find("address: " + address.to_string() + "\n") != std::string::npos);

        auto loaded = ks.load("known", "pw");
        REQUIRE(loaded.ok());
        CHECK(loaded->address() == address);
    }

    TEST_CASE("a corrupted byte anywhere gives an error, never a different key") {
        TempDir tmp;
        Keystore ks(tmp.path(), fast_kdf_msec);
        auto created = ks.create("alice", "pw");
        REQUIRE(created.ok());
        const fs::path file = ks.path_of("alice");
        const std::string good = read_text(file);
        const std::size_t body = good.find('\n', good.find("-----BEGIN")) + 1;
        const std::size_t body_end = good.find("-----END");

        SUBCASE("one byte in the middle of the ciphertext") {
            std::string bad = good;
            std::size_t pos = (body + body_end) / 2;
            bad[pos] = bad[pos] == 'A' ? 'B' : 'A';
            write_text(file, bad);
            Errc code = ks.load("alice", "pw").code();
            CHECK((code == Errc::wrong_passphrase || code == Errc::malformed));
        }
        SUBCASE("a sweep over the whole file") {
            // Base64 swaps keep the armour parsable, so they reach the DER and the cipher;
            // the last positions exercise the END line. A few base64 positions only carry
            // padding bits and decode to the same DER, so "ok with the same key" is allowed.
            for (std::size_t pos = 0; pos < good.size(); pos += 5) {
                std::string bad = good;
                bad[pos] = bad[pos] == 'A' ? 'B' : 'A';
                write_text(file, bad);
                auto loaded = ks.load("alice", "pw");
                CAPTURE(pos);
                if (loaded.ok()) {
                    CHECK(loaded->address() == created->address());
                } else {
                    Errc code = loaded.code();
                    CHECK((code == Errc::wrong_passphrase || code == Errc::malformed ||
                           code == Errc::storage_corrupt));
                }
            }
        }
        SUBCASE("the header address replaced by another valid address") {
            std::string bad = good;
            std::string mine = created->address().to_string();
            bad.replace(bad.find(mine), mine.size(), Wallet::generate("x").address().to_string());
            write_text(file, bad);
            CHECK(ks.load("alice", "pw").code() == Errc::storage_corrupt);
            // list() reads only the header, so it shows what the header claims.
            CHECK(ks.list().size() == 1);
        }
        SUBCASE("the header naming another alias") {
            std::string bad = good;
            bad.replace(bad.find("alias: alice"), 12, "alias: bobby");
            write_text(file, bad);
            CHECK(ks.load("alice", "pw").code() == Errc::storage_corrupt);
            CHECK(ks.list().empty());
        }
    }

    TEST_CASE("truncated files are malformed or undecryptable") {
        TempDir tmp;
        Keystore ks(tmp.path(), fast_kdf_msec);
        REQUIRE(ks.create("alice", "pw").ok());
        const fs::path file = ks.path_of("alice");
        const std::string good = read_text(file);
        const std::size_t body = good.find("-----BEGIN");
        std::set<std::size_t> lengths = {0,
                                         1,
                                         10,
                                         body - 1,
                                         body,
                                         body + 20,
                                         good.size() / 2,
                                         good.size() - 40,
                                         good.size() - 2};
        for (std::size_t len : lengths) {
            CAPTURE(len);
            write_text(file, good.substr(0, len));
            Errc code = ks.load("alice", "pw").code();
            CHECK((code == Errc::malformed || code == Errc::wrong_passphrase));
        }
    }

    TEST_CASE("a file asking for excessive scrypt work is refused before any work") {
        TempDir tmp;
        Keystore ks(tmp.path(), fast_kdf_msec);
        REQUIRE(ks.create("alice", "pw").ok());
        const fs::path file = ks.path_of("alice");
        const std::string good = read_text(file);
        Bytes der = pem_body_der(good);
        // The smallest tuning: INTEGER N=8192, INTEGER r=1, INTEGER p=1.
        const Bytes params = {0x02, 0x02, 0x20, 0x00, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01};
        auto at = std::search(der.begin(), der.end(), params.begin(), params.end());
        REQUIRE(at != der.end());
        // r = p = 127: only 127 MiB, but 8192 * 127 * 127 block mixes, minutes of work.
        at[6] = 0x7f;
        at[9] = 0x7f;
        std::string armour_begin = "-----BEGIN ENCRYPTED PRIVATE KEY-----\n";
        std::string bad = good.substr(0, good.find(armour_begin)) + armour_begin + base64(der) +
                          "\n-----END ENCRYPTED PRIVATE KEY-----\n";
        write_text(file, bad);
        auto loaded = ks.load("alice", "pw");
        CHECK(loaded.code() == Errc::malformed);
        CHECK(loaded.error().message().find("limits") != std::string::npos);
    }

    TEST_CASE("garbage files are malformed") {
        TempDir tmp;
        Keystore ks(tmp.path(), fast_kdf_msec);
        REQUIRE(ks.create("alice", "pw").ok());
        const fs::path file = ks.path_of("alice");
        const std::string good = read_text(file);
        const std::string header = good.substr(0, good.find("-----BEGIN"));

        std::mt19937 rng(1234);
        std::string noise(700, '\0');
        for (char& c : noise)
            c = static_cast<char>(rng());
        const std::vector<std::string> garbage = {
            noise,
            header + noise,
            header + "-----BEGIN ENCRYPTED PRIVATE KEY-----\n!!!!\n-----END ENCRYPTED PRIVATE "
                     "KEY-----\n",
            header + "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE "
                     "KEY-----\n",
            // An unencrypted key must not load, whatever the passphrase.
            header + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            std::string(Keystore::max_file_bytes + 1, 'x'),
        };
        for (std::size_t i = 0; i < garbage.size(); ++i) {
            CAPTURE(i);
            write_text(file, garbage[i]);
            CHECK(ks.load("alice", "pw").code() == Errc::malformed);
        }
    }
}
