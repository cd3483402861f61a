// store_open <db-file>
//
// Opens a SqliteStore, which upgrades a store of an older format, and exits: 0 once open()
// returned success, 1 on failure. It prints "opening" before the call and "opened" after, so
// the upgrade test (tests/unit/store_test.cpp) can tell where its SIGKILL landed.
#include <popchain/sqlite_store.hpp>

#include <cstdio>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: store_open <db-file>\n");
        return 2;
    }
    std::printf("opening\n");
    std::fflush(stdout);
    auto store = popchain::SqliteStore::open(argv[1]);
    if (!store) {
        std::fprintf(stderr, "store_open: %s\n", store.error().message().c_str());
        return 1;
    }
    std::printf("opened\n");
    std::fflush(stdout);
    return 0;
}
