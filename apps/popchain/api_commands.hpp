// popchain commands that talk to a node's HTTP API, and the local wallet commands.
#pragma once

namespace popchain::cli {

int cmd_tx_get(int argc, char** argv, int first);
int cmd_tx_send(int argc, char** argv, int first);
int cmd_block_get(int argc, char** argv, int first);
int cmd_wallet_new(int argc, char** argv, int first);
int cmd_wallet_list(int argc, char** argv, int first);
int cmd_wallet_balance(int argc, char** argv, int first);

} // namespace popchain::cli
