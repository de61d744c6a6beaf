"""Export half of onedge: branch extraction, ONNX, quantisation, OpenVINO, TensorRT, manifests."""
