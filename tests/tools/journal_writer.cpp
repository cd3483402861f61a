// journal_writer <journal-file> <batches-already-synced>
//
// Writes the batches of journal_chain.hpp to a SqliteJournal, one sync() per batch, until it
// is killed, printing "synced N" (flushed) once batch N's sync() has returned. The crash test
// (tests/unit/pbft_journal_test.cpp) SIGKILLs it at random instants, checks the journal
// holds exactly the state after some whole number of batches, at least the last one printed,
// and starts it again with that number.
#include <popchain/pbft/journal.hpp>

#include "journal_chain.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using namespace popchain;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "journal_writer: %s\n", what.c_str());
    std::exit(1);
}

// A cheap check that the file is where the caller says it is: the replay that would prove it
// exactly costs time the kill schedule does not leave. The test does the exact check.
void check_start(const pbft::JournalState& s, std::uint64_t start) {
    if (start == 0) {
        if (s != pbft::JournalState{}) die("the journal is not empty, but start is 0");
        return;
    }
    if (s.view != journal_chain::view_of(start) ||
        s.in_view_change != journal_chain::in_view_change(start) ||
        s.stable_seq != journal_chain::stable_after(start) || s.pre_prepares.empty() ||
        s.pre_prepares.back().seq != start)
        die("the journal does not hold the state after " + std::to_string(start) + " batches");
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: journal_writer <journal-file> <batches-already-synced>\n");
        return 2;
    }
    char* end = nullptr;
    const unsigned long long start = std::strtoull(argv[2], &end, 10);
    if (end == argv[2] || *end != '\0') die(std::string("bad batch count: ") + argv[2]);

    auto opened = pbft::SqliteJournal::open(argv[1]);
    if (!opened) die(opened.error().message());
    pbft::SqliteJournal& journal = **opened;
    auto state = journal.load();
    if (!state) die("load: " + state.error().message());
    check_start(*state, start);

    for (std::uint64_t k = start + 1;; ++k) {
        journal_chain::write_batch(journal, k);
        if (auto r = journal.sync(); !r)
            die("sync of batch " + std::to_string(k) + ": " + r.error().message());
        // Flushed at once: the test must see every batch synced before its kill.
        std::printf("synced %llu\n", static_cast<unsigned long long>(k));
        std::fflush(stdout);
    }
}
