#include <popchain/net/twins.hpp>

#include <stdexcept>

namespace popchain::net {

class TwinsRouter::TwinTransport final : public Transport {
public:
    TwinTransport(TwinsRouter& router, std::size_t which) : router_(router), which_(which) {}
    NodeId self() const override { return router_.endpoint_.self(); }
    void send(NodeId to, Bytes message) override {
        if (router_.sides_[which_].count(to)) router_.endpoint_.send(to, std::move(message));
    }
    TimerId set_timer(Millis delay, std::function<void()> fire) override {
        return router_.endpoint_.set_timer(delay, std::move(fire));
    }
    void cancel_timer(TimerId id) override { router_.endpoint_.cancel_timer(id); }
    Millis now() const override { return router_.endpoint_.now(); }

private:
    TwinsRouter& router_;
    std::size_t which_;
};

TwinsRouter::TwinsRouter(Transport& endpoint) : endpoint_(endpoint) {
    for (std::size_t i = 0; i < 2; ++i)
        twins_[i] = std::make_unique<TwinTransport>(*this, i);
}

TwinsRouter::~TwinsRouter() = default;

Transport& TwinsRouter::twin(std::size_t which) {
    if (which > 1) throw std::logic_error("TwinsRouter: twins are 0 and 1");
    return *twins_[which];
}

void TwinsRouter::set_receiver(std::size_t which, Receiver* receiver) {
    if (which > 1) throw std::logic_error("TwinsRouter: twins are 0 and 1");
    receivers_[which] = receiver;
}

void TwinsRouter::set_sides(std::set<NodeId> side0, std::set<NodeId> side1) {
    sides_[0] = std::move(side0);
    sides_[1] = std::move(side1);
}

void TwinsRouter::on_message(NodeId from, ByteView message) {
    for (std::size_t i = 0; i < 2; ++i)
        if (receivers_[i] && sides_[i].count(from)) receivers_[i]->on_message(from, message);
}

void TwinsRouter::on_burst_begin() {
    for (Receiver* r : receivers_)
        if (r) r->on_burst_begin();
}

void TwinsRouter::on_burst_end() {
    for (Receiver* r : receivers_)
        if (r) r->on_burst_end();
}

} // namespace popchain::net
