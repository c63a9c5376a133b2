// Hardhat 3's EDR node as a second EVM implementation for the anchoring tests
// (anchoring/devchain.py, HardhatNode), run with this folder as its project. The dev accounts come from a mnemonic the test generates
// at random and passes in RLHF_HARDHAT_MNEMONIC; nothing secret is kept here.
export default {
  networks: {
    node: {  // the network `hardhat node` serves
      type: "edr-simulated",
      chainId: Number(process.env.RLHF_HARDHAT_CHAIN_ID ?? "31337"),
      accounts: { mnemonic: process.env.RLHF_HARDHAT_MNEMONIC ?? "", count: Number(process.env.RLHF_HARDHAT_ACCOUNTS ?? "4") },
    },
  },
};
