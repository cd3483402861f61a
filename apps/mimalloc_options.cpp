// Linked into the executables that allocate with mimalloc (CMakeLists.txt,
// popchain_use_allocator). Runs before main.
//
// mimalloc hands memory that stays free for `decommit_delay` (25 ms by default) back to the
// kernel with madvise(MADV_DONTNEED). A node turns over a block's buffers (frames, the
// decoded block, its encodings for the store and the journal, each about 200 KB for 1,000
// transfers) every few hundred milliseconds, so at the default it returned and faulted in
// the same pages for every block: several madvise calls per block and node, each a TLB
// flush on every core, and half the node's page faults. One second spans several blocks at any
// load; memory free for longer still goes back (docs/dependencies.md has the figures). The
// environment variable MIMALLOC_DECOMMIT_DELAY (or MIMALLOC_PURGE_DELAY in later versions)
// still wins.
#include <mimalloc.h>

#include <cstdlib>

namespace {

constexpr long decommit_delay_ms = 1000;

const bool options_set = [] {
    if (std::getenv("MIMALLOC_DECOMMIT_DELAY") == nullptr &&
        std::getenv("MIMALLOC_PURGE_DELAY") == nullptr)
        mi_option_set(mi_option_decommit_delay, decommit_delay_ms);
    return true;
}();

} // namespace
