// The Python module `popchain`: a thin layer over the C++ library. Errors the library
// returns as values (Result) are raised as popchain.Error; misuse the library treats as a
// logic error (a replica that is already down crashed again, a probability above 1) is
// raised as ValueError or IndexError.
#include "common.hpp"

#include <Python.h>

#include <stdexcept>

namespace popchain::python {

namespace {
// Owned by the module object (added to it below); the extra reference taken here keeps the
// class alive for the translator even if someone deletes popchain.Error from the module.
PyObject* error_type = nullptr;
} // namespace

void init_errors(py::module_& m) {
    error_type = PyErr_NewExceptionWithDoc(
        "popchain.Error",
        "An error the library returned: .code is its stable snake_case name (for example\n"
        "'insufficient_funds', 'bad_signature', 'malformed'), .detail the explanation\n"
        "(possibly empty); str(e) is 'code: detail'.",
        PyExc_Exception, nullptr);
    if (!error_type) throw py::error_already_set();
    Py_INCREF(error_type);
    if (PyModule_AddObject(m.ptr(), "Error", error_type) != 0) {
        Py_DECREF(error_type);
        throw py::error_already_set();
    }

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ErrorException& e) {
            py::object exc = py::reinterpret_borrow<py::object>(error_type)(e.error().message());
            exc.attr("code") = errc_name(e.error().code);
            exc.attr("detail") = e.error().detail;
            PyErr_SetObject(error_type, exc.ptr());
        } catch (const std::out_of_range& e) {
            PyErr_SetString(PyExc_IndexError, e.what());
        } catch (const std::logic_error& e) {
            // SimCluster and SimNetwork report misuse as std::logic_error.
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });
}

} // namespace popchain::python

// The compiled half of the package `popchain` (bindings/python/popchain/__init__.py adds
// the pure-Python LocalCluster).
PYBIND11_MODULE(_popchain, m) {
    using namespace popchain::python;
    m.doc() = "Python bindings of libpopchain, a permissioned pBFT blockchain library.\n\n"
              "Keys and addresses (SigningKey, Wallet, Keystore, Address), transactions (Tx),\n"
              "blocks with Merkle proofs (Block), genesis and the ledger (Genesis, Ledger),\n"
              "block stores (MemoryStore), the light-client check (verify_block) and the\n"
              "deterministic pBFT simulator (SimCluster, run_scenario).\n\n"
              "Library errors are raised as popchain.Error with .code and .detail.";
    init_errors(m);
    init_crypto(m);
    init_tx(m);
    init_wallet(m);
    init_block(m);
    init_ledger(m);
    init_sim(m);
}
