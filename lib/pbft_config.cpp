#include <popchain/block.hpp>
#include <popchain/pbft/config.hpp>

namespace popchain::pbft {

namespace {
Result<void> in_range(const char* field, std::uint64_t value, std::uint64_t lo, std::uint64_t hi) {
    if (value >= lo && value <= hi) return {};
    return make_error(Errc::invalid_argument, std::string(field) + " = " + std::to_string(value) +
                                                  " is outside " + std::to_string(lo) + ".." +
                                                  std::to_string(hi));
}
} // namespace

Result<void> ReplicaConfig::validate(std::uint32_t replicas) const {
    if (replicas == 0 || replicas > max_replicas)
        return make_error(Errc::invalid_argument, "replica count " + std::to_string(replicas) +
                                                      " is outside 1.." +
                                                      std::to_string(max_replicas));
    const Result<void> checks[] = {
        in_range("max_block_txs", max_block_txs, 1, popchain::max_block_txs),
        in_range("max_batch_delay_ms", max_batch_delay_ms, 0, 10'000),
        in_range("checkpoint_interval", checkpoint_interval, 1, 10'000),
        in_range("watermark_window", watermark_window, 2ull * checkpoint_interval, 100'000),
        in_range("request_timeout_ms", request_timeout_ms, 10, 600'000),
        in_range("max_view_change_timeout_ms", max_view_change_timeout_ms, request_timeout_ms,
                 3'600'000),
        in_range("retransmit_ms", retransmit_ms, 1, request_timeout_ms),
        in_range("fetch_timeout_ms", fetch_timeout_ms, 10, 600'000),
    };
    for (const auto& check : checks)
        if (!check) return check;
    // Backups suspect a primary that leaves a request pending for request_timeout_ms; one
    // that waits that long for a batch to fill would be replaced while doing its job.
    if (max_batch_delay_ms >= request_timeout_ms)
        return make_error(
            Errc::invalid_argument,
            "max_batch_delay_ms = " + std::to_string(max_batch_delay_ms) +
                " must be below request_timeout_ms = " + std::to_string(request_timeout_ms) +
                " (backups would suspect a primary waiting for a batch to fill)");
    return {};
}

} // namespace popchain::pbft
