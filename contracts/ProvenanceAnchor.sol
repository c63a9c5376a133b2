// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title ProvenanceAnchor
/// @notice Publishes checkpoints of RFC 9162 Merkle logs (tree size, root hash, manifest CID)
///         so that anyone can later check a checkpoint against a block hash alone. Each log is
///         registered with its origin and Ed25519 log key, and a new root is accepted only with
///         an RFC 9162 consistency proof from the log's previously anchored root: the chain
///         itself refuses a history that is not append-only.
/// @dev Spec: docs/contract.md. The Anchored event is the record verifiers check (through the
///      receipt-trie proof in docs/anchor-evidence.md); storage keeps what the size and
///      consistency checks and the views need (see docs/contract.md, "Gas").
contract ProvenanceAnchor {
    /// @dev Per-log state in two slots: slot 0 = size (uint64) and the registered flag, so
    ///      anchor() reads both with one storage access; slot 1 = root.
    struct Head {
        uint64 size;
        bool registered;
        bytes32 root;
    }

    /// @notice Emitted for every accepted checkpoint. logId = SHA-256(UTF-8 origin line).
    event Anchored(bytes32 indexed logId, uint64 treeSize, bytes32 rootHash, string cid, address indexed submitter);
    /// @notice A log was registered: logId = SHA-256(origin), publicKey = its Ed25519 log key.
    event LogRegistered(bytes32 indexed logId, string origin, bytes32 publicKey);
    /// @notice The log's key changed; checkpoints anchored at sizes <= fromSize stay under the old key.
    event LogKeyRotated(bytes32 indexed logId, bytes32 publicKey, uint64 fromSize);
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
    /// @notice anchor or rotateLogKey for a log that registerLog has not registered.
    error LogNotRegistered(bytes32 logId);
    /// @notice registerLog for a log id that is registered already.
    error LogAlreadyRegistered(bytes32 logId);
    /// @notice registerLog with a log id that is not SHA-256 of the origin.
    error LogIdMismatch(bytes32 logId, bytes32 sha256OfOrigin);
    /// @notice registerLog or rotateLogKey with the zero key.
    error ZeroKey();
    /// @notice The consistency proof does not prove the new root extends the anchored one.
    error InconsistentProof(bytes32 logId, uint64 fromSize, uint64 toSize);
    /// @notice A first anchor came with a proof (there is nothing to be consistent with).
    error UnexpectedProof(bytes32 logId);

    address public owner;
    address public pendingOwner;
    mapping(address => bool) public authorized;
    mapping(bytes32 => Head) private heads;
    /// @notice The current Ed25519 key of each registered log (zero: not registered).
    mapping(bytes32 => bytes32) public logKey;

    constructor() {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// @notice Register log `logId` = SHA-256(origin) with its Ed25519 log key. Owner only, once.
    function registerLog(bytes32 logId, string calldata origin, bytes32 publicKey) external onlyOwner {
        if (heads[logId].registered) revert LogAlreadyRegistered(logId);
        if (publicKey == bytes32(0)) revert ZeroKey();
        bytes32 h = sha256(bytes(origin));
        if (h != logId) revert LogIdMismatch(logId, h);
        logKey[logId] = publicKey;
        heads[logId].registered = true;
        emit LogRegistered(logId, origin, publicKey);
    }

    /// @notice Replace the log's key from now on; anchors up to the current size stay under the old one.
    function rotateLogKey(bytes32 logId, bytes32 publicKey) external onlyOwner {
        if (!heads[logId].registered) revert LogNotRegistered(logId);
        if (publicKey == bytes32(0)) revert ZeroKey();
        logKey[logId] = publicKey;
        emit LogKeyRotated(logId, publicKey, heads[logId].size);
    }

    /// @notice Publish a checkpoint of log `logId`. Only authorised submitters, registered logs;
    ///         the size must grow, and `proof` must be the RFC 9162 consistency proof from the
    ///         latest anchored (size, root) to (treeSize, rootHash) (empty for a first anchor).
    function anchor(bytes32 logId, uint64 treeSize, bytes32 rootHash, string calldata cid, bytes32[] calldata proof)
        external
    {
        if (!authorized[msg.sender]) revert NotAuthorized(msg.sender);
        Head storage head = heads[logId];
        if (!head.registered) revert LogNotRegistered(logId);
        uint64 latestSize = head.size;
        // Strictly growing: a repeat or a smaller size would let an operator publish two roots
        // for one size or roll a log back; the first anchor needs treeSize >= 1.
        if (treeSize <= latestSize) revert SizeNotIncreasing(logId, latestSize, treeSize);
        if (latestSize == 0) {
            if (proof.length != 0) revert UnexpectedProof(logId);
        } else if (!_consistent(latestSize, treeSize, head.root, rootHash, proof)) {
            revert InconsistentProof(logId, latestSize, treeSize);
        }
        head.size = treeSize;
        head.root = rootHash;
        emit Anchored(logId, treeSize, rootHash, cid, msg.sender);
    }

    /// @dev RFC 9162 section 2.1.4.2, for 0 < m < n: the proof rebuilds both roots. Assembly
    ///      because it runs on every anchor: calldata is read directly and every node hash
    ///      SHA-256(0x01 || left || right) goes straight to the precompile (address 0x02).
    function _consistent(uint256 m, uint256 n, bytes32 rootM, bytes32 rootN, bytes32[] calldata proof)
        private
        view
        returns (bool ok)
    {
        assembly ("memory-safe") {
            let ptr := proof.offset
            let end := add(ptr, shl(5, proof.length))
            ok := 1
            let fr := rootM
            // If m is not a power of two, the path starts with the proof's first node.
            if and(m, sub(m, 1)) {
                switch eq(ptr, end)
                case 1 { ok := 0 }
                default {
                    fr := calldataload(ptr)
                    ptr := add(ptr, 32)
                }
            }
            let sr := fr
            let fn := sub(m, 1)
            let sn := sub(n, 1)
            for {} and(fn, 1) {} {
                fn := shr(1, fn)
                sn := shr(1, sn)
            }
            let buf := mload(0x40) // scratch beyond the free memory pointer: 65 bytes
            mstore8(buf, 0x01)
            for {} and(ok, lt(ptr, end)) { ptr := add(ptr, 32) } {
                if iszero(sn) {
                    ok := 0
                    break
                }
                let c := calldataload(ptr)
                switch or(and(fn, 1), eq(fn, sn))
                case 0 {
                    mstore(add(buf, 1), sr)
                    mstore(add(buf, 33), c)
                    if iszero(staticcall(gas(), 0x02, buf, 65, 0x00, 0x20)) { revert(0, 0) }
                    sr := mload(0x00)
                }
                default {
                    mstore(add(buf, 1), c)
                    mstore(add(buf, 33), fr)
                    if iszero(staticcall(gas(), 0x02, buf, 65, 0x00, 0x20)) { revert(0, 0) }
                    fr := mload(0x00)
                    mstore(add(buf, 33), sr)
                    if iszero(staticcall(gas(), 0x02, buf, 65, 0x00, 0x20)) { revert(0, 0) }
                    sr := mload(0x00)
                    if iszero(and(fn, 1)) {
                        for {} and(iszero(and(fn, 1)), iszero(iszero(fn))) {} {
                            fn := shr(1, fn)
                            sn := shr(1, sn)
                        }
                    }
                }
                fn := shr(1, fn)
                sn := shr(1, sn)
            }
            ok := and(ok, and(iszero(sn), and(eq(fr, rootM), eq(sr, rootN))))
        }
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
