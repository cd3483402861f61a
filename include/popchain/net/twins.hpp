// Twins: two replicas that share one identity (id and key), each running the honest replica
// code, each reaching its own part of the network. Together they behave like one Byzantine
// replica that equivocates in every way the protocol allows (two primaries proposing
// different blocks for one slot, conflicting votes, conflicting view changes), without any
// hand-written misbehaviour: the honest code is run twice.
//
// TwinsRouter is attached to the network under the shared id. It hands each twin a
// Transport of its own: sends go out only to the peers on that twin's side, and messages
// arrive at every twin whose side holds their sender. Sides change during a run
// (set_sides), which is how a test moves the twins across partitions; a peer on both sides
// talks to both twins, a peer on neither talks to none. Timers and the clock are the shared
// endpoint's, so both twins run in the same virtual time.
#pragma once

#include <popchain/net/transport.hpp>

#include <array>
#include <memory>
#include <set>

namespace popchain::net {

class TwinsRouter : public Receiver {
public:
    // `endpoint` is what the network gave the shared id; it must outlive the router.
    explicit TwinsRouter(Transport& endpoint);
    ~TwinsRouter() override;
    TwinsRouter(const TwinsRouter&) = delete;
    TwinsRouter& operator=(const TwinsRouter&) = delete;

    // The transport twin 0 or 1 runs on, and where its inputs go (nullptr: dropped).
    Transport& twin(std::size_t which);
    void set_receiver(std::size_t which, Receiver* receiver);

    // The peers each twin reaches from now on.
    void set_sides(std::set<NodeId> side0, std::set<NodeId> side1);

    void on_message(NodeId from, ByteView message) override;
    void on_burst_begin() override;
    void on_burst_end() override;

private:
    class TwinTransport;
    Transport& endpoint_;
    std::array<std::set<NodeId>, 2> sides_;
    std::array<Receiver*, 2> receivers_{};
    std::array<std::unique_ptr<TwinTransport>, 2> twins_;
};

} // namespace popchain::net
