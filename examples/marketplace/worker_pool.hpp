// A fixed set of threads running queued jobs. The HTTP server's io_context must never
// block, and a marketplace request may wait seconds for a commit, so every API request is
// handed to a pool and answered through its Responder. Requests that wait for a commit have
// a pool of their own, entered through a ChainGate, so they never hold the threads that
// answer everything else (docs/marketplace.md, "When the chain is slow or down").
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace popmarket {

class WorkerPool {
public:
    explicit WorkerPool(std::size_t threads) {
        for (std::size_t i = 0; i < threads; ++i)
            threads_.emplace_back([this] { run(); });
    }
    ~WorkerPool() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& t : threads_)
            t.join();
    }
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;

    void post(std::function<void()> job) {
        {
            std::lock_guard lock(mutex_);
            jobs_.push_back(std::move(job));
        }
        wake_.notify_one();
    }

private:
    void run() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
                if (jobs_.empty()) return; // stopping, and nothing left to answer
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::function<void()>> jobs_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

// Counts the requests that may wait for the chain, in all and per member, and refuses one
// over either limit before anything is done for it. With `total` equal to the threads of the
// pool that runs them, an admitted request never queues behind another one's wait.
class ChainGate {
public:
    enum class Refusal { none, total, member };

    // Held while an admitted request runs; the slot is freed by release() or when the last
    // copy goes, whichever comes first.
    class Ticket {
    public:
        Ticket(ChainGate& gate, std::int64_t member) : gate_(&gate), member_(member) {}
        ~Ticket() { release(); }
        Ticket(const Ticket&) = delete;
        Ticket& operator=(const Ticket&) = delete;
        void release() {
            if (gate_) gate_->leave(member_);
            gate_ = nullptr;
        }

    private:
        ChainGate* gate_;
        std::int64_t member_;
    };

    ChainGate(std::size_t total, std::size_t per_member) : total_(total), per_member_(per_member) {}
    ChainGate(const ChainGate&) = delete;
    ChainGate& operator=(const ChainGate&) = delete;

    std::size_t total_limit() const { return total_; }
    std::size_t member_limit() const { return per_member_; }

    // A ticket, or null with `why` saying which limit refused it (the member's own first).
    std::shared_ptr<Ticket> enter(std::int64_t member, Refusal& why) {
        std::lock_guard lock(mutex_);
        auto it = by_member_.find(member);
        if (it != by_member_.end() && it->second >= per_member_) {
            why = Refusal::member;
            return nullptr;
        }
        if (in_flight_ >= total_) {
            why = Refusal::total;
            return nullptr;
        }
        ++by_member_[member];
        ++in_flight_;
        why = Refusal::none;
        return std::make_shared<Ticket>(*this, member);
    }

private:
    void leave(std::int64_t member) {
        std::lock_guard lock(mutex_);
        --in_flight_;
        if (auto it = by_member_.find(member); it != by_member_.end() && --it->second == 0)
            by_member_.erase(it);
    }

    std::mutex mutex_;
    const std::size_t total_;
    const std::size_t per_member_;
    std::size_t in_flight_ = 0;
    std::map<std::int64_t, std::size_t> by_member_;
};

} // namespace popmarket
