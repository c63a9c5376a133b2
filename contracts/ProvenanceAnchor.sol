// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title ProvenanceAnchor
/// @notice Publishes checkpoints of RFC 9162 Merkle logs (tree size, root hash, manifest CID)
///         so that anyone can later check a checkpoint against a block hash alone.
/// @dev Spec: docs/contract.md. The Anchored event is the record verifiers check (through the
///      receipt-trie proof in docs/anchor-evidence.md); storage keeps only what the monotonic
///      size check and the `latest` view need: two slots per log (see docs/contract.md, "Gas").
contract ProvenanceAnchor {
    /// @dev Per-log state. `size` and `root` cannot share one 32-byte slot, so this struct
    ///      occupies two slots: slot 0 = size (uint64, low bytes), slot 1 = root.
    struct Head {
        uint64 size;
        bytes32 root;
    }

    /// @notice Emitted for every accepted checkpoint. logId = SHA-256(UTF-8 origin line).
    event Anchored(bytes32 indexed logId, uint64 treeSize, bytes32 rootHash, string cid, address indexed submitter);
    event Authorized(address indexed account);
    event Revoked(address indexed account);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice The caller is not the owner.
    error NotOwner(address caller);
    /// @notice The caller is not the pending owner of a two-step transfer.
    error NotPendingOwner(address caller);
    /// @notice The caller has not been authorised by the owner to anchor.
    error NotAuthorized(address caller);
    /// @notice The submitted tree size does not grow past the latest anchored size of the log.
    error SizeNotIncreasing(bytes32 logId, uint64 latestSize, uint64 treeSize);
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();

    address public owner;
    address public pendingOwner;
    mapping(address => bool) public authorized;
    mapping(bytes32 => Head) private heads;

    constructor() {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// @notice Publish a checkpoint of log `logId`. Only authorised submitters; the size must grow.
    function anchor(bytes32 logId, uint64 treeSize, bytes32 rootHash, string calldata cid) external {
        if (!authorized[msg.sender]) revert NotAuthorized(msg.sender);
        Head storage head = heads[logId];
        uint64 latestSize = head.size;
        // Strictly growing: a repeat or a smaller size would let an operator publish two roots
        // for one size or roll a log back; the first anchor needs treeSize >= 1.
        if (treeSize <= latestSize) revert SizeNotIncreasing(logId, latestSize, treeSize);
        head.size = treeSize;
        head.root = rootHash;
        emit Anchored(logId, treeSize, rootHash, cid, msg.sender);
    }

    /// @notice The latest anchored size and root of `logId`; (0, 0x00..) if never anchored.
    function latest(bytes32 logId) external view returns (uint64 size, bytes32 root) {
        Head storage head = heads[logId];
        return (head.size, head.root);
    }

    function authorize(address account) external onlyOwner {
        if (account == address(0)) revert ZeroAddress();
        authorized[account] = true;
        emit Authorized(account);
    }

    function revoke(address account) external onlyOwner {
        authorized[account] = false;
        emit Revoked(account);
    }

    /// @notice Step one of a two-step transfer: name the new owner, who must accept.
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        pendingOwner = newOwner;
        emit OwnershipTransferStarted(owner, newOwner);
    }

    /// @notice Step two: the pending owner takes ownership.
    function acceptOwnership() external {
        if (msg.sender != pendingOwner) revert NotPendingOwner(msg.sender);
        address previous = owner;
        owner = msg.sender;
        pendingOwner = address(0);
        emit OwnershipTransferred(previous, msg.sender);
    }
}
