// Shared by the binding sources: turning Result errors into Python exceptions, and byte
// conversions.
#pragma once

#include <popchain/bytes.hpp>
#include <popchain/result.hpp>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <exception>
#include <string>
#include <string_view>
#include <utility>

namespace popchain::python {

namespace py = pybind11;

// Carries a library Error through C++ frames until pybind11's translator turns it into a
// popchain.Error (with .code and .detail), so every binding can simply unwrap() a Result.
class ErrorException : public std::exception {
public:
    explicit ErrorException(Error e) : error_(std::move(e)), what_(error_.message()) {}
    const Error& error() const noexcept { return error_; }
    const char* what() const noexcept override { return what_.c_str(); }

private:
    Error error_;
    std::string what_;
};

[[noreturn]] inline void raise(Error e) {
    throw ErrorException(std::move(e));
}

template <class T>
T unwrap(Result<T> r) {
    if (!r) raise(r.error());
    return std::move(r).value();
}
inline void unwrap(const Result<void>& r) {
    if (!r) raise(r.error());
}

inline py::bytes to_py_bytes(ByteView v) {
    return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}
// A copy of a Python bytes-like object's contents (bytes, bytearray, memoryview).
inline Bytes from_py_bytes(const py::buffer& b) {
    py::buffer_info info = b.request();
    if (info.ndim > 1 || (info.itemsize != 1 && info.size != 0))
        throw py::type_error("expected a bytes-like object of single bytes");
    const auto* p = static_cast<const std::uint8_t*>(info.ptr);
    return Bytes(p, p + info.size);
}

// One module, several translation units: each registers the classes of one concept.
void init_errors(py::module_& m);
void init_crypto(py::module_& m);
void init_tx(py::module_& m);
void init_wallet(py::module_& m);
void init_block(py::module_& m);
void init_ledger(py::module_& m);
void init_sim(py::module_& m);

} // namespace popchain::python
